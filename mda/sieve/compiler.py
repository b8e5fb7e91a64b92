"""Check a parsed script against the command table and build the tree the interpreter runs.

Everything that can be decided without a message is decided here, once per script: unknown commands,
tests and tags, missing ``require`` (RFC 5228 §3.2), argument shapes, comparator names (§2.7.3),
``if``/``elsif``/``else`` order, ``set`` modifiers (RFC 5229 §4.1), literal redirect addresses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import SieveError
from .ext_editheader import FIELD_NAME
from .ext_encoded import EncodingError
from .ext_encoded import decode as decode_encoded
from .ext_enotify import check_method
from .ext_include import valid_name as valid_script_name
from .ext_match import EXTRA_COMPARATORS
from .ext_match import check as check_match
from .match import CASEMAP, COMPARATORS
from .strings import Value, compile_string
from .syntax import Argument, CommandNode, NumberArg, StringArg, TagArg, TestNode

#: Capabilities accepted by ``require``. ``ereject`` is RFC 5429's; ``mailbox`` only brings ``:create``.
CAPABILITIES = frozenset(
    {
        "fileinto",
        "reject",
        "ereject",
        "envelope",
        "subaddress",
        "copy",
        "imap4flags",
        "vacation",
        "variables",
        "body",
        "mailbox",
        "comparator-i;octet",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
        "relational",
        "regex",
        "date",
        "index",
        "encoded-character",
        "environment",
        "ihave",
        "vacation-seconds",
        "spamtest",
        "spamtestplus",
        "virustest",
        "include",
        "duplicate",
        "enotify",
        "mime",
        "foreverypart",
        "extracttext",
        "editheader",
    }
)

#: Deepest nesting of foreverypart loops.
MAX_LOOP_NESTING = 8
#: Capabilities that change how the whole script is read, so only a top-level ``require`` can bring them
#: (Pigeonhole's ``ihave`` is false for them).
STATIC_ONLY = frozenset({"variables", "encoded-character"})
#: Capabilities another one brings along (spamtestplus extends spamtest, RFC 5235 §3.2; vacation-seconds
#: extends vacation, as in Pigeonhole).
IMPLIED = {"spamtestplus": ("spamtest",), "vacation-seconds": ("vacation",)}

# Argument kinds of the table below.
STRING, STRLIST, NUMBER = "string", "string-list", "number"


@dataclass(frozen=True, slots=True)
class TagSpec:
    """A tagged argument: its exclusive group (one tag per group), the kind of its value, if any, and
    the capability it needs."""

    group: str
    kind: str | None = None
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class Spec:
    positional: tuple[str, ...] = ()
    tags: Mapping[str, TagSpec] = field(default_factory=dict)
    extension: str | None = None
    #: The first positional argument may be left out (imap4flags' optional variable name).
    optional_first: bool = False
    #: The last positional argument may be left out (deleteheader's value patterns).
    optional_last: bool = False
    tests: str = "none"  # "none", "one" or "list"


_MATCH = {
    "is": TagSpec("match"),
    "contains": TagSpec("match"),
    "matches": TagSpec("match"),
    "value": TagSpec("match", STRING, "relational"),
    "count": TagSpec("match", STRING, "relational"),
    "regex": TagSpec("match", None, "regex"),
    "comparator": TagSpec("comparator", STRING),
}
_ADDRESS_PART = {
    "all": TagSpec("part"),
    "localpart": TagSpec("part"),
    "domain": TagSpec("part"),
    "user": TagSpec("part", None, "subaddress"),
    "detail": TagSpec("part", None, "subaddress"),
}
_INDEX = {"index": TagSpec("index", NUMBER, "index"), "last": TagSpec("last", None, "index")}
_ZONE = {"zone": TagSpec("zone", STRING)}
_MIME_PARTS = {"mime": TagSpec("mime", None, "mime"), "anychild": TagSpec("anychild", None, "mime")}
_MIME = {
    **_MIME_PARTS,
    "type": TagSpec("mimeopt", None, "mime"),
    "subtype": TagSpec("mimeopt", None, "mime"),
    "contenttype": TagSpec("mimeopt", None, "mime"),
    "param": TagSpec("mimeopt", STRLIST, "mime"),
}
_SET_MODIFIERS = {
    "lower": TagSpec("case"),
    "upper": TagSpec("case"),
    "lowerfirst": TagSpec("first"),
    "upperfirst": TagSpec("first"),
    "quotewildcard": TagSpec("quote"),
    "length": TagSpec("length"),
}
_FLAGS = {"flags": TagSpec("flags", STRLIST, "imap4flags")}
_COPY = {"copy": TagSpec("copy", None, "copy")}

COMMANDS: Mapping[str, Spec] = {
    "require": Spec((STRLIST,)),
    "stop": Spec(),
    "keep": Spec((), _FLAGS),
    "discard": Spec(),
    "fileinto": Spec((STRING,), {**_FLAGS, **_COPY, "create": TagSpec("create", None, "mailbox")}, "fileinto"),
    "redirect": Spec((STRING,), _COPY),
    "reject": Spec((STRING,), extension="reject"),
    "ereject": Spec((STRING,), extension="ereject"),
    "vacation": Spec(
        (STRING,),
        {
            "days": TagSpec("days", NUMBER),
            "seconds": TagSpec("days", NUMBER, "vacation-seconds"),
            "subject": TagSpec("subject", STRING),
            "from": TagSpec("from", STRING),
            "addresses": TagSpec("addresses", STRLIST),
            "mime": TagSpec("mime"),
            "handle": TagSpec("handle", STRING),
        },
        "vacation",
    ),
    # RFC 5229 §4.1: modifiers of equal precedence exclude each other, hence the groups.
    "set": Spec((STRING, STRING), _SET_MODIFIERS, "variables"),
    "break": Spec((), {"name": TagSpec("name", STRING)}, "foreverypart"),
    "extracttext": Spec((STRING,), {**_SET_MODIFIERS, "first": TagSpec("count", NUMBER)}, "extracttext"),
    "error": Spec((STRING,), extension="ihave"),
    "include": Spec(
        (STRING,),
        {
            "personal": TagSpec("location"),
            "global": TagSpec("location"),
            "once": TagSpec("once"),
            "optional": TagSpec("optional"),
        },
        "include",
    ),
    "return": Spec(extension="include"),
    "notify": Spec(
        (STRING,),
        {
            "from": TagSpec("from", STRING),
            "importance": TagSpec("importance", STRING),
            "options": TagSpec("options", STRLIST),
            "message": TagSpec("message", STRING),
        },
        "enotify",
    ),
    "global": Spec((STRLIST,), extension="include"),
    "addheader": Spec((STRING, STRING), {"last": TagSpec("last")}, "editheader"),
    # RFC 5293 §5: the value patterns may be left out (optional_last), then every occurrence goes.
    # RFC 5293 §5 defines its own :index and :last: no require "index".
    "deleteheader": Spec(
        (STRING, STRLIST),
        {**_MATCH, "index": TagSpec("index", NUMBER), "last": TagSpec("last")},
        "editheader",
        optional_last=True,
    ),
    "setflag": Spec((STRING, STRLIST), extension="imap4flags", optional_first=True),
    "addflag": Spec((STRING, STRLIST), extension="imap4flags", optional_first=True),
    "removeflag": Spec((STRING, STRLIST), extension="imap4flags", optional_first=True),
}

TESTS: Mapping[str, Spec] = {
    "true": Spec(),
    "false": Spec(),
    "not": Spec(tests="one"),
    "allof": Spec(tests="list"),
    "anyof": Spec(tests="list"),
    "exists": Spec((STRLIST,), _MIME_PARTS),
    "size": Spec((), {"over": TagSpec("size", NUMBER), "under": TagSpec("size", NUMBER)}),
    "header": Spec((STRLIST, STRLIST), {**_MATCH, **_INDEX, **_MIME}),
    "address": Spec((STRLIST, STRLIST), {**_MATCH, **_ADDRESS_PART, **_INDEX, **_MIME_PARTS}),
    "date": Spec(
        (STRING, STRING, STRLIST),
        {**_MATCH, **_INDEX, **_ZONE, "originalzone": TagSpec("zone", None)},
        "date",
    ),
    "currentdate": Spec((STRING, STRLIST), {**_MATCH, **_ZONE}, "date"),
    "environment": Spec((STRING, STRLIST), _MATCH, "environment"),
    "ihave": Spec((STRLIST,), extension="ihave"),
    "spamtest": Spec((STRING,), {**_MATCH, "percent": TagSpec("percent", None, "spamtestplus")}, "spamtest"),
    "virustest": Spec((STRING,), _MATCH, "virustest"),
    "valid_notify_method": Spec((STRLIST,), extension="enotify"),
    "notify_method_capability": Spec((STRING, STRING, STRLIST), _MATCH, "enotify"),
    "duplicate": Spec(
        (),
        {
            "handle": TagSpec("handle", STRING),
            "header": TagSpec("id", STRING),
            "uniqueid": TagSpec("id", STRING),
            "seconds": TagSpec("seconds", NUMBER),
            "last": TagSpec("last"),
        },
        "duplicate",
    ),
    "envelope": Spec((STRLIST, STRLIST), {**_MATCH, **_ADDRESS_PART}, "envelope"),
    "hasflag": Spec((STRLIST, STRLIST), _MATCH, "imap4flags", optional_first=True),
    "string": Spec((STRLIST, STRLIST), _MATCH, "variables"),
    "body": Spec(
        (STRLIST,),
        {
            **_MATCH,
            "raw": TagSpec("transform"),
            "text": TagSpec("transform"),
            "content": TagSpec("transform", STRLIST),
        },
        "body",
    ),
}

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADDR_SPEC = re.compile(r"[^\s@<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Test:
    """A validated test: ``tags`` maps a tag group to the tag name or its value; ``match_type`` and
    ``comparator`` are resolved here, defaults included, so a delivery does not look them up."""

    name: str
    line: int
    tags: Mapping[str, Any]
    args: tuple[Any, ...]
    tests: tuple[Test, ...]
    match_type: str = "is"
    comparator: str = CASEMAP
    #: The relation of ``:value``/``:count`` (RFC 5231), e.g. ``"ge"``.
    relation: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    line: int
    tags: Mapping[str, Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Branch:
    test: Test | None  # None for ``else``
    block: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class If:
    """An ``if`` with its ``elsif``/``else`` chain (RFC 5228 §3.1)."""

    line: int
    branches: tuple[Branch, ...]


Node = Command | If


@dataclass(frozen=True, slots=True)
class Script:
    """A compiled script, immutable and safe to share between deliveries and threads.

    ``program`` is what runs: the body lowered to closures by ``interpreter.lower`` (engine.compile_text
    always does it; a Script without it runs nothing).
    """

    name: str
    body: tuple[Node, ...]
    extensions: frozenset[str]
    program: tuple[Callable[[Any], None], ...] = field(default=(), compare=False, repr=False)


class _Compiler:
    def __init__(self, name: str) -> None:
        self.name = name
        self.extensions: set[str] = set()
        #: Names of the enclosing foreverypart loops (None for an unnamed one).
        self.loops: list[Any] = []

    def error(self, line: int, message: str) -> SieveError:
        return SieveError(self.name, line, message)

    def script(self, commands: tuple[CommandNode, ...]) -> Script:
        body = self.block(commands, top=True)
        return Script(self.name, body, frozenset(self.extensions))

    def block(self, commands: tuple[CommandNode, ...], top: bool = False) -> tuple[Node, ...]:
        out: list[Node] = []
        requires_allowed = top
        for cmd in commands:
            if cmd.name == "require":
                if not requires_allowed:
                    raise self.error(cmd.line, "require must come before any other command (RFC 5228 §3.2)")
                self.require(cmd)
                continue
            requires_allowed = False
            if cmd.name == "if":
                out.append(If(cmd.line, (self.branch(cmd),)))
            elif cmd.name in ("elsif", "else"):
                previous = out[-1] if out else None
                if not isinstance(previous, If) or previous.branches[-1].test is None:
                    raise self.error(cmd.line, f"{cmd.name} without a preceding if or elsif")
                out[-1] = If(previous.line, (*previous.branches, self.branch(cmd)))
            elif cmd.name == "foreverypart":
                out.append(self.foreverypart(cmd))
            else:
                out.append(self.command(cmd))
        return tuple(out)

    def foreverypart(self, cmd: CommandNode) -> Command:
        """RFC 5703 §3: a loop over MIME parts; its block travels in the command's tags."""
        if cmd.block is None or cmd.tests:
            raise self.error(cmd.line, "foreverypart needs a block and takes no test")
        spec = Spec((), {"name": TagSpec("name", STRING)}, "foreverypart")
        tags, _ = self.arguments(cmd.name, cmd.line, cmd.args, spec)
        if len(self.loops) >= MAX_LOOP_NESTING:
            raise self.error(cmd.line, f"foreverypart nested deeper than {MAX_LOOP_NESTING} levels")
        self.loops.append(tags.get("name"))
        try:
            tags["block"] = self.block(cmd.block)
        finally:
            self.loops.pop()
        return Command(cmd.name, cmd.line, tags, ())

    def require(self, cmd: CommandNode) -> None:
        if cmd.block is not None or cmd.tests or len(cmd.args) != 1 or not isinstance(cmd.args[0], StringArg):
            raise self.error(cmd.line, "require expects one string list")
        for capability in cmd.args[0].values:
            if capability not in CAPABILITIES:
                raise self.error(cmd.line, f"unknown Sieve capability '{capability}'")
            self.extensions.add(capability)
            self.extensions.update(IMPLIED.get(capability, ()))

    def branch(self, cmd: CommandNode) -> Branch:
        if cmd.block is None:
            raise self.error(cmd.line, f"{cmd.name} needs a block")
        if cmd.args:
            raise self.error(cmd.line, f"{cmd.name} takes no arguments")
        if cmd.name == "else":
            if cmd.tests:
                raise self.error(cmd.line, "else takes no test")
            test = None
        else:
            if len(cmd.tests) != 1:
                raise self.error(cmd.line, f"{cmd.name} needs exactly one test")
            test = self.test(cmd.tests[0])
        if test is not None and test.name == "ihave":
            return Branch(test, self.ihave_block(test, cmd.block))
        return Branch(test, self.block(cmd.block))

    def ihave_block(self, test: Test, block: tuple[CommandNode, ...]) -> tuple[Node, ...]:
        """RFC 5463 §4: a block guarded by ``ihave`` may use what it tests for; when mda lacks one of
        those capabilities the block never runs and is not compiled (it may use unknown commands)."""
        if not test.tags["known"]:
            return ()
        added = set(test.args[0]) - self.extensions
        self.extensions.update(added)
        try:
            return self.block(block)
        finally:
            self.extensions.difference_update(added)

    def command(self, cmd: CommandNode) -> Command:
        spec = COMMANDS.get(cmd.name)
        if spec is None:
            raise self.error(cmd.line, f"unknown command '{cmd.name}'")
        if cmd.block is not None:
            raise self.error(cmd.line, f"command '{cmd.name}' takes no block")
        if cmd.tests:
            raise self.error(cmd.line, f"command '{cmd.name}' takes no test")
        tags, args = self.arguments(cmd.name, cmd.line, cmd.args, spec)
        if cmd.name == "deleteheader":
            self.value_patterns(cmd.line, tags, args)
        command = Command(cmd.name, cmd.line, tags, args)
        self.check_command(command)
        return command

    def value_patterns(self, line: int, tags: dict[str, Any], args: tuple[Any, ...]) -> None:
        """deleteheader (RFC 5293 §5): its match type and comparator apply to the value patterns, so
        they are checked and resolved as a ``header`` test's are, into ``tags["test"]``."""
        if "last" in tags and "index" not in tags:
            raise self.error(line, "':last' needs ':index' (RFC 5260 §6)")
        if tags.get("index", 1) < 1:
            raise self.error(line, "':index' must be 1 or more")
        if isinstance(args[0], str) and not FIELD_NAME.fullmatch(args[0]):
            raise self.error(line, f"deleteheader: invalid field name '{args[0]}'")
        if len(args) < 2:
            if "match" in tags or "comparator" in tags:
                raise self.error(line, "deleteheader: a match type or comparator needs value patterns")
            return
        match = tags.get("match", "is")
        match_type, relation = match if isinstance(match, tuple) else (match, None)
        test = Test("header", line, {}, args, (), match_type, tags.get("comparator", CASEMAP), relation)
        self.check_test(replace(test, tags={k: v for k, v in tags.items() if k in ("match", "comparator")}))
        tags["test"] = test

    def test(self, node: TestNode) -> Test:
        spec = TESTS.get(node.name)
        if spec is None:
            raise self.error(node.line, f"unknown test '{node.name}'")
        tags, args = self.arguments(node.name, node.line, node.args, spec)
        count = len(node.tests)
        if spec.tests == "none" and count:
            raise self.error(node.line, f"test '{node.name}' takes no sub-tests")
        if spec.tests == "one" and count != 1:
            raise self.error(node.line, f"test '{node.name}' needs exactly one test")
        if spec.tests == "list" and (count == 0 or len(node.args) > 0):
            raise self.error(node.line, f"test '{node.name}' needs a test list")
        # RFC 5228 §2.7.3 makes i;ascii-casemap the default comparator; Pigeonhole's ``string`` test
        # (RFC 5229 §5) compares with i;octet unless told otherwise, and so does mda.
        default_comparator = "i;octet" if node.name == "string" else CASEMAP
        if node.name == "ihave":
            # A capability named through a variable is unknown when compiling: the test is false.
            known = CAPABILITIES - STATIC_ONLY
            tags["known"] = all(isinstance(c, str) and c in known for c in args[0])
        match = tags.get("match", "is")
        match_type, relation = match if isinstance(match, tuple) else (match, None)
        test = Test(
            node.name,
            node.line,
            tags,
            args,
            tuple(self.test(t) for t in node.tests),
            match_type=match_type,
            comparator=tags.get("comparator", default_comparator),
            relation=relation,
        )
        self.check_test(test)
        return test

    def arguments(
        self, name: str, line: int, raw: tuple[Argument, ...], spec: Spec
    ) -> tuple[dict[str, Any], tuple[Any, ...]]:
        """Split tagged from positional arguments (RFC 5228 §2.6: tags come first) and check kinds."""
        if spec.extension is not None and spec.extension not in self.extensions:
            raise self.error(line, f"'{name}' needs require \"{spec.extension}\"")
        tags: dict[str, Any] = {}
        i = 0
        while i < len(raw) and isinstance(raw[i], TagArg):
            tag = raw[i]
            assert isinstance(tag, TagArg)
            tspec = spec.tags.get(tag.name)
            if tspec is None:
                raise self.error(tag.line, f"unknown tag ':{tag.name}' for '{name}'")
            if tspec.extension is not None and tspec.extension not in self.extensions:
                raise self.error(tag.line, f"':{tag.name}' needs require \"{tspec.extension}\"")
            if tspec.group in tags:
                raise self.error(tag.line, f"':{tag.name}' conflicts with an earlier tag of '{name}'")
            i += 1
            if tspec.kind is None:
                tags[tspec.group] = tag.name
                continue
            if i >= len(raw):
                raise self.error(tag.line, f"':{tag.name}' needs a {tspec.kind} argument")
            value = self.value(raw[i], tspec.kind, f"':{tag.name}'")
            tags[tspec.group] = (
                (tag.name, value)
                if tspec.group in ("size", "transform", "match", "zone", "days", "id", "mimeopt")
                else value
            )
            i += 1
        positional = raw[i:]
        kinds = spec.positional
        # imap4flags (RFC 5232 §3-4): the leading variable name may be left out; record whether it was.
        if spec.optional_first and len(positional) == len(kinds) - 1:
            kinds = kinds[1:]
            tags["variable_given"] = False
        elif spec.optional_first:
            tags["variable_given"] = True
        if spec.optional_last and len(positional) == len(kinds) - 1:
            kinds = kinds[:-1]
        if len(positional) != len(kinds):
            if any(isinstance(a, TagArg) for a in positional):
                raise self.error(line, f"tagged arguments of '{name}' must come before the others")
            count = len(positional)
            raise self.error(line, f"'{name}' expects {len(kinds)} positional argument(s), got {count}")
        values = tuple(self.value(a, k, f"'{name}'") for a, k in zip(positional, kinds, strict=True))
        return tags, values

    def value(self, arg: Argument, kind: str, what: str) -> Any:
        variables = "variables" in self.extensions
        if kind == NUMBER:
            if not isinstance(arg, NumberArg):
                raise self.error(arg.line, f"{what} expects a number")
            return arg.value
        if not isinstance(arg, StringArg):
            raise self.error(arg.line, f"{what} expects a {kind}")
        texts = arg.values
        if "encoded-character" in self.extensions:
            try:
                texts = tuple(decode_encoded(t) for t in texts)
            except EncodingError as exc:
                raise self.error(arg.line, str(exc)) from None
        if kind == STRING:
            if arg.is_list and len(texts) != 1:
                raise self.error(arg.line, f"{what} expects a single string, not a list")
            return compile_string(texts[0], variables)
        return tuple(compile_string(v, variables) for v in texts)

    def check_command(self, cmd: Command) -> None:
        if cmd.name == "addheader" and isinstance(cmd.args[0], str) and not FIELD_NAME.fullmatch(cmd.args[0]):
            raise self.error(cmd.line, f"addheader: invalid field name '{cmd.args[0]}'")
        if cmd.name == "redirect" and isinstance(cmd.args[0], str) and not _ADDR_SPEC.fullmatch(cmd.args[0]):
            raise self.error(cmd.line, f"redirect address '{cmd.args[0]}' is invalid")
        if cmd.name == "set":
            target = cmd.args[0]
            if not isinstance(target, str) or not _VARIABLE_NAME.fullmatch(target):
                raise self.error(cmd.line, f"invalid variable name '{target}' (RFC 5229 §4)")
        if cmd.name in ("setflag", "addflag", "removeflag") and cmd.tags["variable_given"]:
            self.require_variables(cmd.line, cmd.args[0])
        if cmd.name == "include" and isinstance(cmd.args[0], str) and not valid_script_name(cmd.args[0]):
            raise self.error(cmd.line, f"invalid script name '{cmd.args[0]}'")
        if cmd.name in ("break", "extracttext") and not self.loops:
            raise self.error(cmd.line, f"{cmd.name} outside a foreverypart loop (RFC 5703)")
        if cmd.name == "break" and "name" in cmd.tags and cmd.tags["name"] not in self.loops:
            raise self.error(cmd.line, f"break names no enclosing loop '{cmd.tags['name']}'")
        if cmd.name == "extracttext":
            self.require_variables(cmd.line, cmd.args[0], "extracttext")
        if cmd.name == "notify" and isinstance(cmd.args[0], str):
            problem = check_method(cmd.args[0])
            if problem is not None:
                raise self.error(cmd.line, problem)
        if cmd.name == "global":
            for name in cmd.args[0]:
                self.require_variables(cmd.line, name, "global")
        if cmd.name == "fileinto" and cmd.args[0] == "":
            raise self.error(cmd.line, "fileinto needs a non-empty folder name")

    def check_test(self, test: Test) -> None:
        comparator = test.tags.get("comparator")
        if comparator is not None and comparator not in COMPARATORS | EXTRA_COMPARATORS:
            raise self.error(test.line, f"unknown comparator '{comparator}'")
        if comparator in EXTRA_COMPARATORS and f"comparator-{comparator}" not in self.extensions:
            raise self.error(test.line, f"comparator '{comparator}' needs require \"comparator-{comparator}\"")
        if "match" in test.tags or comparator is not None:
            keys = test.args[-1] if test.args else ()
            problem = check_match(test.match_type, test.relation, test.comparator, keys)
            if problem is not None:
                raise self.error(test.line, problem)
        if ("anychild" in test.tags or "mimeopt" in test.tags) and "mime" not in test.tags:
            raise self.error(test.line, "':anychild', ':type', ':subtype', ':contenttype' and ':param' need ':mime'")
        if "last" in test.tags and "index" not in test.tags and test.name != "duplicate":
            raise self.error(test.line, "':last' needs ':index' (RFC 5260 §6)")
        if test.tags.get("index", 1) < 1:
            raise self.error(test.line, "':index' must be 1 or more")
        if test.name == "envelope":
            for part in test.args[0]:
                if isinstance(part, str) and part.lower() not in ("from", "to"):
                    raise self.error(test.line, f"unknown envelope part '{part}'")
        if test.name == "hasflag" and test.tags["variable_given"]:
            for name in test.args[0]:
                self.require_variables(test.line, name)

    def require_variables(self, line: int, name: Value, what: str = "a flag variable name") -> None:
        if "variables" not in self.extensions:
            raise self.error(line, f'{what} needs require "variables"')
        if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
            raise self.error(line, f"invalid variable name '{name}'")


def compile_commands(commands: tuple[CommandNode, ...], name: str) -> Script:
    return _Compiler(name).script(commands)
