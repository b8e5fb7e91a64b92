"""Run compiled scripts against one message.

One :class:`_Run` per script holds that script's variables, match variables and ``imap4flags`` internal
variable; the :class:`ResultBuilder` is shared by the scripts of a delivery, as Pigeonhole shares one
result between ``sieve_before`` scripts, the user's script and ``sieve_after`` scripts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from email.message import Message as MimePart
from pathlib import Path
from typing import Any

from .actions import FileInto, Keep, PendingVacation, Reject, ResultBuilder
from .budget import Meter, WorkLimitExceeded
from .compiler import Command, If, Node, Script, Test
from .errors import SieveRuntimeError
from .ext_date import test_currentdate, test_date
from .ext_duplicate import Seen, test_duplicate
from .ext_editheader import do_addheader, do_deleteheader
from .ext_enotify import do_notify, test_notify_method_capability, test_valid_notify_method
from .ext_environment import test_environment
from .ext_include import IncludeState, Return, attach, do_global, do_include, do_return
from .ext_index import select
from .ext_match import is_extended, prepare, prepare_cached
from .ext_mime import address_values, do_break, do_extracttext, header_values
from .ext_mime import exists as mime_exists
from .ext_mime import loop as mime_loop
from .ext_regex import RegexError
from .ext_spamtest import test_spamtest
from .match import Keys, keys_for
from .message import Address, SieveMessage, parse_address_list, split_address
from .settings import DEFAULT_SETTINGS, SieveSettings
from .strings import Ref, Value
from .vacation import DEFAULT_DAYS, VacationState

#: Pigeonhole's ``sieve_variables_max_variable_size``: longer values are cut (RFC 5229 §6 allows it).
MAX_VARIABLE_SIZE = 4096
#: Pigeonhole's ``sieve_variables_max_scope_size``.
MAX_VARIABLES = 255
#: Address parts that are fields of :class:`Address` (``user`` and ``detail`` need the delimiters).
_PLAIN_PARTS = frozenset({"all", "localpart", "domain"})
#: Longest string an expansion may build; beyond it the script fails instead of eating memory.
MAX_EXPANDED = 1 << 20


class _Stop(Exception):
    """``stop`` (RFC 5228 §3.3): ends the current script."""


@dataclass(slots=True)
class Context:
    """What every script of one delivery sees (not frozen: a frozen dataclass sets each of these fields
    through ``object.__setattr__``, a cost paid for every delivery; nothing assigns them)."""

    message: SieveMessage
    sender: str
    recipient: str
    original_recipient: str | None
    delimiters: str
    result: ResultBuilder
    meter: Meter
    """The work units every script of this delivery spends together (:mod:`mda.sieve.budget`)."""
    #: The clock of ``currentdate`` (seconds since the epoch); None reads the system clock.
    now: float | None = None
    settings: SieveSettings = DEFAULT_SETTINGS
    #: The record of vacation replies and duplicate IDs (only read while scripts run).
    state: VacationState | None = None
    #: IDs the ``duplicate`` tests saw, recorded by the caller once the delivery is committed.
    duplicates: list[Seen] = field(default_factory=list)

    def now_or_clock(self) -> float:
        return time.time() if self.now is None else self.now


class _Run:
    # include (RFC 6609), set by ext_include for scripts that use it (class defaults keep the common
    # run free of the cost): the state shared along the chain, the nesting depth, where :personal
    # scripts are (None: beside the top-level script).
    include: IncludeState | None = None
    depth = 0
    personal_dir: Path | None = None
    #: The MIME part a foreverypart loop is at (RFC 5703); None outside loops.
    mime_part: MimePart | None = None

    def __init__(self, script: Script, ctx: Context) -> None:
        self.script = script
        self.ctx = ctx
        self.message = ctx.message
        self.meter = ctx.meter
        self.variables: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.flags: list[str] = []  # the imap4flags internal variable (RFC 5232 §3)
        self.plain = "variables" not in script.extensions
        if "include" in script.extensions:
            attach(self)

    def error(self, line: int, message: str) -> SieveRuntimeError:
        return SieveRuntimeError(self.script.name, line, message)

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        program = self.script.program
        step = None
        try:
            for step in program:
                step(self)
        except (_Stop, Return):
            pass
        except WorkLimitExceeded as exceeded:
            # The line of the top-level command that was running: found only now, so that the loop
            # above costs nothing more per command.
            line = self.script.body[program.index(step)].line if step is not None else 0
            raise self.error(line, str(exceeded)) from None

    # -- strings -------------------------------------------------------------------------------
    def expand(self, value: Value, line: int) -> str:
        """Substitute variables (RFC 5229 §3); unknown names expand to the empty string.

        Each expansion is charged to the run's work limit: a 1 MiB script of ``${a}`` references to
        4 KiB values builds a gigabyte of strings."""
        if isinstance(value, str):
            return value
        out: list[str] = []
        size = 0
        for part in value.parts:
            if isinstance(part, Ref):
                if part.index is not None:
                    text = self.match_vars[part.index] if part.index < len(self.match_vars) else ""
                else:
                    text = self.variables.get(part.name, "")
            else:
                text = part
            size += len(text)
            if size > MAX_EXPANDED:
                raise self.error(line, f"string longer than {MAX_EXPANDED} characters after expansion")
            out.append(text)
        self.ctx.meter.spend(size)  # building the string: one unit per character
        return "".join(out)

    def expand_all(self, values: tuple[Value, ...], line: int) -> tuple[str, ...]:
        # Without "variables" every value is compiled to a plain str (strings.compile_string): nothing to
        # do, and the script's own tuple goes on, so match.keys_for finds its keys prepared.
        if self.plain:
            return values  # type: ignore[return-value]  # all plain str without "variables"
        return tuple(self.expand(v, line) for v in values)

    # -- matching ------------------------------------------------------------------------------
    def matches(self, test: Test, values: Iterable[str], keys: tuple[str, ...]) -> bool:
        """True if any value matches any key; a ``:matches`` hit sets the match variables (RFC 5229 §3.2)."""
        if is_extended(test.match_type, test.comparator):
            return self.matches_extended(test, values, keys)
        # A script's own constant keys are prepared once (keys_for caches them); keys built from
        # variables hold message text and are prepared for this comparison only, never cached.
        prepared = (
            keys_for(keys, test.match_type, test.comparator)
            if self.plain
            else Keys(keys, test.match_type, test.comparator)
        )
        groups = prepared.first(values, self.ctx.meter)
        if groups is None:
            return False
        if test.match_type == "matches" and not self.plain:
            self.match_vars = [g[:MAX_VARIABLE_SIZE] for g in groups]
        return True

    def matches_extended(self, test: Test, values: Iterable[str], keys: tuple[str, ...]) -> bool:
        """:func:`matches` for the match types and comparators of :mod:`mda.sieve.ext_match`."""
        try:
            prepared = (
                prepare_cached(keys, test.match_type, test.relation, test.comparator)
                if self.plain
                else prepare(keys, test.match_type, test.relation, test.comparator)
            )
        except RegexError as exc:  # a key built from variables
            raise self.error(test.line, str(exc)) from None
        groups = prepared.first(values, self.ctx.meter)
        if groups is None:
            return False
        if test.match_type == "regex" and not self.plain:
            self.match_vars = [g[:MAX_VARIABLE_SIZE] for g in groups]
        return True

    # -- what header, address and envelope tests compare ------------------------------------------
    # The names are lower case: the compiler's constants are lowered once, expanded ones by test_compared.
    def header_values(self, test: Test, names: Iterable[str]) -> list[str]:
        if "mime" in test.tags:
            return header_values(self, test, list(names))
        message = self.ctx.message
        if "index" in test.tags:
            return [value for name in names for value in select(message.header_values(name), test.tags)]
        return [value for name in names for value in message.header_values(name)]

    def address_values(self, test: Test, names: Iterable[str]) -> list[str]:
        if "mime" in test.tags:
            return address_values(self, test, list(names))
        message = self.ctx.message
        if "index" in test.tags:  # the addresses of the one field occurrence :index names
            fields = [f for name in names for f in select(message.headers.get(name, []), test.tags)]
            addresses = parse_address_list(fields) if fields else []
        else:
            addresses = [address for name in names for address in message.addresses(name)]
        return [value for address in addresses if (value := self.address_part(test, address)) is not None]

    def envelope_values(self, test: Test, names: Iterable[str]) -> list[str]:
        values: list[str] = []
        for name in names:
            if name == "from":
                if not self.ctx.sender:
                    # RFC 5228 §5.4: the null reverse-path is the empty string, whatever the part.
                    if test.tags.get("part") != "detail":
                        values.append("")
                    continue
                address = self.ctx.sender
            elif name == "to":
                # Pigeonhole compares "to" with the original recipient when it is known.
                address = self.ctx.original_recipient or self.ctx.recipient
            else:
                continue
            part = self.address_part(test, split_address(address))
            if part is not None:
                values.append(part)
        return values

    def address_part(self, test: Test, addr: Address) -> str | None:
        """RFC 5228 §2.7.4 address parts and RFC 5233 :user/:detail; None when there is no detail."""
        part = test.tags.get("part", "all")
        if part in _PLAIN_PARTS:
            value: str = getattr(addr, part)
            return value
        delimiters = self.ctx.delimiters
        if len(delimiters) == 1:  # the usual "+"
            cut = addr.localpart.find(delimiters)
        else:
            cut = min((i for i in (addr.localpart.find(d) for d in delimiters) if i >= 0), default=-1)
        if part == "user":
            return addr.localpart if cut < 0 else addr.localpart[:cut]
        return None if cut < 0 else addr.localpart[cut + 1 :]

    # -- tests ---------------------------------------------------------------------------------
    def test_exists(self, test: Test) -> bool:
        if "mime" in test.tags:
            return mime_exists(self, test, [n.lower() for n in self.expand_all(test.args[0], test.line)])
        headers = self.ctx.message.headers
        return all(name.lower() in headers for name in self.expand_all(test.args[0], test.line))

    def test_size(self, test: Test) -> bool:
        kind, limit = test.tags["size"]
        size: int = self.ctx.message.size
        return size > int(limit) if kind == "over" else size < int(limit)

    def test_compared(self, test: Test) -> bool:
        """``header``, ``address`` and ``envelope``: the named fields' values against the keys."""
        names = [name.lower() for name in self.expand_all(test.args[0], test.line)]
        values = _VALUES[test.name](self, test, names)
        # Most rules of a filter test a field this message does not have: no values, nothing to match
        # (except for ``:count``, RFC 5231 §4.1: no values are a count of 0).
        return (bool(values) or test.match_type == "count") and self.matches(
            test, values, self.expand_all(test.args[1], test.line)
        )

    def test_hasflag(self, test: Test) -> bool:
        keys = tuple(f for k in self.expand_all(test.args[-1], test.line) for f in k.split())
        if test.tags["variable_given"]:
            flags = [f for name in test.args[0] for f in self.variables.get(str(name).lower(), "").split()]
        else:
            flags = self.flags
        return self.matches(test, flags, keys)

    def test_string(self, test: Test) -> bool:
        values = self.expand_all(test.args[0], test.line)
        if test.match_type == "count":  # RFC 5229 §5: an empty string counts 0
            values = tuple(v for v in values if v)
        return self.matches(test, values, self.expand_all(test.args[1], test.line))

    def test_body(self, test: Test) -> bool:
        transform = test.tags.get("transform", "text")
        types: tuple[str, ...] = ()
        if not isinstance(transform, str):  # (":content", content types)
            transform, content_types = transform
            types = tuple(self.expand_all(content_types, test.line))
        return self.matches(
            test,
            self.ctx.message.body_parts(transform, types),
            self.expand_all(test.args[0], test.line),
        )

    # -- commands ------------------------------------------------------------------------------
    def do_stop(self, cmd: Command) -> None:
        raise _Stop

    def explicit_flags(self, cmd: Command) -> tuple[str, ...]:
        """``:flags`` if given, else the internal variable's current value (RFC 5232 §5)."""
        given = cmd.tags.get("flags")
        if given is None:
            return tuple(self.flags)
        return tuple(_add_flags([], self.expand_all(given, cmd.line)))

    def do_keep(self, cmd: Command) -> None:
        self.ctx.result.store(Keep(self.explicit_flags(cmd)), False, self.script.name, cmd.line)

    def do_discard(self, cmd: Command) -> None:
        self.ctx.result.discard()

    def do_fileinto(self, cmd: Command) -> None:
        folder = self.expand(cmd.args[0], cmd.line)
        action = FileInto(folder, self.explicit_flags(cmd), "create" in cmd.tags)
        self.ctx.result.store(action, "copy" in cmd.tags, self.script.name, cmd.line)

    def do_redirect(self, cmd: Command) -> None:
        address = self.expand(cmd.args[0], cmd.line).strip()
        if "@" not in address or any(c in address for c in " \t\r\n<>"):
            raise self.error(cmd.line, f"redirect address '{address}' is invalid")
        self.ctx.result.redirect(address, "copy" in cmd.tags, self.script.name, cmd.line)

    def do_reject(self, cmd: Command) -> None:
        action = Reject(self.expand(cmd.args[0], cmd.line), cmd.name == "ereject")
        self.ctx.result.add_reject(action, self.script.name, cmd.line)

    def do_vacation(self, cmd: Command) -> None:
        tags = cmd.tags
        reason = self.expand(cmd.args[0], cmd.line)
        subject = self.expand(tags["subject"], cmd.line) if "subject" in tags else None
        from_ = self.expand(tags["from"], cmd.line) if "from" in tags else None
        mime = "mime" in tags
        if "handle" in tags:
            handle = self.expand(tags["handle"], cmd.line)
        else:
            # Pigeonhole's default handle: the arguments that make two vacation commands different.
            handle = "".join(
                (
                    reason,
                    "<default-subject>" if subject is None else subject,
                    "<default-from>" if from_ is None else from_,
                    "<MIME>" if mime else "<NO-MIME>",
                )
            )
        pending = PendingVacation(
            reason=reason,
            subject=subject,
            from_=from_,
            addresses=tuple(self.expand_all(tags.get("addresses", ()), cmd.line)),
            mime=mime,
            handle=handle,
            seconds=_period(tags.get("days")),
            line=cmd.line,
        )
        self.ctx.result.add_vacation(pending, self.script.name, cmd.line)

    def do_error(self, cmd: Command) -> None:
        """RFC 5463 §5: the script fails with the given message (the message is kept)."""
        raise self.error(cmd.line, f"error command: {self.expand(cmd.args[0], cmd.line)}")

    def do_set(self, cmd: Command) -> None:
        name = str(cmd.args[0]).lower()
        value = _modify(self.expand(cmd.args[1], cmd.line), cmd.tags)
        if name not in self.variables and len(self.variables) >= MAX_VARIABLES:
            raise self.error(cmd.line, f"more than {MAX_VARIABLES} variables")
        self.variables[name] = value[:MAX_VARIABLE_SIZE]

    def do_flags(self, cmd: Command) -> None:
        given = self.expand_all(cmd.args[-1], cmd.line)
        if cmd.tags["variable_given"]:
            name = str(cmd.args[0]).lower()
            current = self.variables.get(name, "").split()
        else:
            current = self.flags
        if cmd.name == "setflag":
            new = _add_flags([], given)
        elif cmd.name == "addflag":
            new = _add_flags(list(current), given)
        else:
            drop = {f.lower() for g in given for f in g.split()}
            new = [f for f in current if f.lower() not in drop]
        if cmd.tags["variable_given"]:
            self.variables[name] = " ".join(new)[:MAX_VARIABLE_SIZE]
        else:
            self.flags = new


_COMMANDS: dict[str, Callable[[_Run, Command], None]] = {
    "stop": _Run.do_stop,
    "keep": _Run.do_keep,
    "discard": _Run.do_discard,
    "fileinto": _Run.do_fileinto,
    "redirect": _Run.do_redirect,
    "reject": _Run.do_reject,
    "ereject": _Run.do_reject,
    "vacation": _Run.do_vacation,
    "set": _Run.do_set,
    "setflag": _Run.do_flags,
    "addflag": _Run.do_flags,
    "removeflag": _Run.do_flags,
    "error": _Run.do_error,
    "include": do_include,
    "return": do_return,
    "global": do_global,
    "notify": do_notify,
    "break": do_break,
    "extracttext": do_extracttext,
    "addheader": do_addheader,
    "deleteheader": do_deleteheader,
}
"""Each command's method (the compiler admits no other name)."""

_VALUES: dict[str, Callable[[_Run, Test, Iterable[str]], list[str]]] = {
    "header": _Run.header_values,
    "address": _Run.address_values,
    "envelope": _Run.envelope_values,
}
"""What the comparing tests compare, given their field names."""

_TESTS: dict[str, Callable[[_Run, Test], bool]] = {
    "exists": _Run.test_exists,
    "size": _Run.test_size,
    "header": _Run.test_compared,
    "address": _Run.test_compared,
    "envelope": _Run.test_compared,
    "hasflag": _Run.test_hasflag,
    "string": _Run.test_string,
    "body": _Run.test_body,
    "date": test_date,
    "currentdate": test_currentdate,
    "environment": test_environment,
    "spamtest": test_spamtest,
    "virustest": test_spamtest,
    "duplicate": test_duplicate,
    "valid_notify_method": test_valid_notify_method,
    "notify_method_capability": test_notify_method_capability,
}
"""The tests that read the message or the envelope; ``true``, ``false``, ``not``, ``allof`` and ``anyof``
are closures of their own (``_check``)."""


# -- lowering: the tree becomes closures once per script ---------------------------------------------

Step = Callable[[_Run], None]
Check = Callable[[_Run], bool]


def lower(script: Script) -> Script:
    """The script with its ``program``: one closure per command and ``if``, built once per script.

    A delivery then makes one call per rule instead of walking the tree and dispatching on every node,
    and a ``header`` test of a script without variables finds a field the message lacks in one dict
    lookup: the common case of a filter's rules (engine.compile_text lowers every script it compiles).
    """
    plain = "variables" not in script.extensions
    return replace(script, program=_block(script.body, plain))


def _block(nodes: tuple[Node, ...], plain: bool) -> tuple[Step, ...]:
    return tuple(_step(node, plain) for node in nodes)


def _step(node: Node, plain: bool) -> Step:
    if isinstance(node, If):
        branches = tuple(
            (None if branch.test is None else _check(branch.test, plain), _block(branch.block, plain))
            for branch in node.branches
        )

        if len(branches) == 1:  # the usual rule: ``if TEST { ... }`` without elsif or else
            ((only, block),) = branches
            assert only is not None  # the first branch always has a test
            test = node.branches[0].test
            assert test is not None
            fused = _field_rule(test, block) if plain else None
            if fused is not None:
                return fused
            field = _required_field(test, plain)
            if field is not None:

                def run_unless_absent(run: _Run) -> None:
                    # Most rules of a filter test a field this message lacks: one dict look-up then.
                    message = run.message
                    headers = message.parsed if message.parsed is not None else message.headers
                    if field in headers and only(run):
                        for step in block:
                            step(run)

                return run_unless_absent

            def run_when(run: _Run) -> None:
                if only(run):
                    for step in block:
                        step(run)

            return run_when

        def run_if(run: _Run) -> None:
            for check, block in branches:
                if check is None or check(run):
                    for step in block:
                        step(run)
                    return

        return run_if
    if node.name == "foreverypart":
        return mime_loop(node, _block(node.tags["block"], plain))
    command = _COMMANDS[node.name]
    return lambda run: command(run, node)


def _check(test: Test, plain: bool) -> Check:
    if test.name in ("true", "false", "ihave"):
        result = test.name == "true" or bool(test.tags.get("known"))
        return lambda run: result
    if test.name in ("not", "allof", "anyof"):
        subs = tuple(_check(sub, plain) for sub in test.tests)
        if test.name == "not":
            return lambda run: not subs[0](run)
        if test.name == "allof":
            return lambda run: all(check(run) for check in subs)
        return lambda run: any(check(run) for check in subs)
    if (
        plain
        and test.name in _VALUES
        and test.match_type != "count"  # no values is a count of 0: test_compared handles it
        and "index" not in test.tags
        and "mime" not in test.tags
    ):
        return _constant_check(test)
    general = _TESTS[test.name]
    return lambda run: general(run, test)


def _required_field(test: Test, plain: bool) -> str | None:
    """A header field (lower case) without which ``test`` is false and does nothing else (no match
    variables, no work charged), or None: a constant ``header`` or ``address`` test of one field with
    any match type but ``:count``, an ``exists`` test (its first field), or an ``allof`` whose first
    test is one of those (skipping that one skips nothing the later ones would have done)."""
    if not plain or "mime" in test.tags or "index" in test.tags:
        return None
    if test.name == "allof":
        return _required_field(test.tests[0], plain) if test.tests else None
    if test.name == "exists":
        return test.args[0][0].lower() if test.args[0] else None
    if test.name == "header" or (test.name == "address" and test.tags.get("part", "all") in _PLAIN_PARTS):
        names = test.args[0]
        return names[0].lower() if len(names) == 1 and test.match_type != "count" else None
    return None


def _field_rule(test: Test, block: tuple[Step, ...]) -> Step | None:
    """``if TEST { ... }`` as one closure when TEST is a constant ``header`` test of one field or an
    ``address`` test of one field and a plain part (any match type but ``:count``): the usual rule of
    a filter. A field the message lacks costs one dict look-up; one it has, the match alone (no call
    for the test). None for any other test, which ``_check`` runs."""
    if (
        test.name not in ("header", "address")
        or len(test.args[0]) != 1
        or test.match_type == "count"
        or "index" in test.tags
        or "mime" in test.tags
    ):
        return None
    part = test.tags.get("part", "all")
    if test.name == "address" and part not in _PLAIN_PARTS:
        return None
    name = test.args[0][0].lower()
    first = _first(test)
    if test.name == "header":

        def header_rule(run: _Run) -> None:
            message = run.message
            if name in (message.parsed if message.parsed is not None else message.headers) and (
                first(message.header_values(name), run.meter) is not None
            ):
                for step in block:
                    step(run)

        return header_rule
    index = Address._fields.index(part)

    def address_rule(run: _Run) -> None:
        message = run.message
        if name in (message.parsed if message.parsed is not None else message.headers):
            addresses = message.addresses(name)
            if addresses and first([address[index] for address in addresses], run.meter) is not None:
                for step in block:
                    step(run)

    return address_rule


def _first(test: Test) -> Callable[[Iterable[str], Meter], list[str] | None]:
    """The ``first`` method of a constant test's keys, prepared once per script."""
    if is_extended(test.match_type, test.comparator):  # :regex, :value, i;ascii-numeric (ext_match)
        return prepare_cached(test.args[1], test.match_type, test.relation, test.comparator).first
    return keys_for(test.args[1], test.match_type, test.comparator).first


def _constant_check(test: Test) -> Check:
    """``header``, ``address`` or ``envelope`` whose names and keys are constants (no variables), with
    any match type but ``:count``: the keys are prepared here, once, and the usual one-field ``header``
    or ``address`` test reads the message's cached values directly."""
    names = tuple(name.lower() for name in test.args[0])
    first = _first(test)
    part = test.tags.get("part", "all")
    if len(names) == 1 and test.name == "header":
        (name,) = names

        def check_header(run: _Run) -> bool:
            values = run.message.header_values(name)
            return bool(values) and first(values, run.meter) is not None

        return check_header
    if len(names) == 1 and test.name == "address" and part in _PLAIN_PARTS:
        (name,) = names
        index = Address._fields.index(part)

        def check_address(run: _Run) -> bool:
            addresses = run.message.addresses(name)
            return bool(addresses) and first([address[index] for address in addresses], run.meter) is not None

        return check_address
    values_of = _VALUES[test.name]

    def check(run: _Run) -> bool:
        values = values_of(run, test, names)
        return bool(values) and first(values, run.ctx.meter) is not None

    return check


def _period(days: tuple[str, int] | None) -> int:
    """Seconds between replies: ``:days`` (RFC 5230 §4.1, default 7) or ``:seconds`` (RFC 6131)."""
    if days is None:
        return DEFAULT_DAYS * 86400
    tag, value = days
    return int(value) * (86400 if tag == "days" else 1)


def _add_flags(current: list[str], given: Iterable[str]) -> list[str]:
    """Flags are space-separated and case-insensitive (RFC 5232 §3); no flag is listed twice."""
    seen = {f.lower() for f in current}
    for text in given:
        for flag in text.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                current.append(flag)
    return current


def _modify(value: str, tags: Mapping[str, Any]) -> str:
    """``set`` modifiers in RFC 5229 §4.1 precedence order: case, first letter, quoting, length."""
    case = tags.get("case")
    if case == "lower":
        value = value.lower()
    elif case == "upper":
        value = value.upper()
    first = tags.get("first")
    if first == "lowerfirst":
        value = value[:1].lower() + value[1:]
    elif first == "upperfirst":
        value = value[:1].upper() + value[1:]
    if "quote" in tags:
        value = value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    if "length" in tags:
        value = str(len(value))
    return value


def execute(scripts: Iterable[Script], ctx: Context) -> tuple[str, ...]:
    """Run ``scripts`` in order and return the final internal flags for the implicit keep.

    As in Pigeonhole's multiscript execution, the next script only runs while the message is still
    kept (implicitly or by an explicit ``keep``) after the previous one; ``stop`` ends only its own
    script. The imap4flags internal variable carries over from one script to the next, as in Pigeonhole
    (a ``sieve_before`` script's ``addflag "$Junk"`` is seen by the user's ``hasflag``).
    """
    flags: tuple[str, ...] = ()
    for script in scripts:
        ctx.result.begin_script()
        run = _Run(script, ctx)
        run.flags = list(flags)
        run.run()
        flags = tuple(run.flags)
        if not ctx.result.still_kept():
            break
    return flags
