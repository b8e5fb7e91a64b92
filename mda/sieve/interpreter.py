"""Run compiled scripts against one message.

One :class:`_Run` per script holds that script's variables, match variables and ``imap4flags`` internal
variable; the :class:`ResultBuilder` is shared by the scripts of a delivery, as Pigeonhole shares one
result between ``sieve_before`` scripts, the user's script and ``sieve_after`` scripts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actions import FileInto, Keep, PendingVacation, Reject, ResultBuilder
from .compiler import Command, If, Node, Script, Test
from .errors import SieveRuntimeError
from .match import match_value
from .message import Address, SieveMessage, split_address
from .strings import Ref, Value
from .vacation import DEFAULT_DAYS

#: Pigeonhole's ``sieve_variables_max_variable_size``: longer values are cut (RFC 5229 §6 allows it).
MAX_VARIABLE_SIZE = 4096
#: Pigeonhole's ``sieve_variables_max_scope_size``.
MAX_VARIABLES = 255
#: Longest string an expansion may build; beyond it the script fails instead of eating memory.
MAX_EXPANDED = 1 << 20


class _Stop(Exception):
    """``stop`` (RFC 5228 §3.3): ends the current script."""


@dataclass(frozen=True, slots=True)
class Context:
    """What every script of one delivery sees."""

    message: SieveMessage
    sender: str
    recipient: str
    original_recipient: str | None
    delimiters: str
    result: ResultBuilder


class _Run:
    def __init__(self, script: Script, ctx: Context) -> None:
        self.script = script
        self.ctx = ctx
        self.variables: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.flags: list[str] = []  # the imap4flags internal variable (RFC 5232 §3)
        self.plain = "variables" not in script.extensions
        self.commands: dict[str, Callable[[Command], None]] = {
            "stop": self.do_stop,
            "keep": self.do_keep,
            "discard": self.do_discard,
            "fileinto": self.do_fileinto,
            "redirect": self.do_redirect,
            "reject": self.do_reject,
            "ereject": self.do_reject,
            "vacation": self.do_vacation,
            "set": self.do_set,
            "setflag": self.do_flags,
            "addflag": self.do_flags,
            "removeflag": self.do_flags,
        }
        self.tests: dict[str, Callable[[Test], bool]] = {
            "true": lambda t: True,
            "false": lambda t: False,
            "not": lambda t: not self.test(t.tests[0]),
            "allof": lambda t: all(self.test(s) for s in t.tests),
            "anyof": lambda t: any(self.test(s) for s in t.tests),
            "exists": self.test_exists,
            "size": self.test_size,
            "header": self.test_header,
            "address": self.test_address,
            "envelope": self.test_envelope,
            "hasflag": self.test_hasflag,
            "string": self.test_string,
            "body": self.test_body,
        }

    def error(self, line: int, message: str) -> SieveRuntimeError:
        return SieveRuntimeError(self.script.name, line, message)

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        with contextlib.suppress(_Stop):
            self.block(self.script.body)

    def block(self, nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            if isinstance(node, If):
                for branch in node.branches:
                    if branch.test is None or self.test(branch.test):
                        self.block(branch.block)
                        break
            else:
                self.commands[node.name](node)

    def test(self, test: Test) -> bool:
        return self.tests[test.name](test)

    # -- strings -------------------------------------------------------------------------------
    def expand(self, value: Value, line: int) -> str:
        """Substitute variables (RFC 5229 §3); unknown names expand to the empty string."""
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
        return "".join(out)

    def expand_all(self, values: Sequence[Value], line: int) -> Sequence[str]:
        # Without "variables" every value is compiled to a plain str (strings.compile_string): nothing to do.
        if self.plain:
            return values  # type: ignore[return-value]  # all plain str without "variables"
        return [self.expand(v, line) for v in values]

    # -- matching ------------------------------------------------------------------------------
    def matches(self, test: Test, values: Iterable[str], keys: Sequence[str]) -> bool:
        """True if any value matches any key; a ``:matches`` hit sets the match variables (RFC 5229 §3.2)."""
        match_type = test.tags.get("match", "is")
        comparator = test.tags.get("comparator", self.default_comparator(test))
        for value in values:
            for key in keys:
                groups = match_value(value, key, match_type, comparator)
                if groups is not None:
                    if match_type == "matches" and "variables" in self.script.extensions:
                        self.match_vars = [g[:MAX_VARIABLE_SIZE] for g in groups]
                    return True
        return False

    @staticmethod
    def default_comparator(test: Test) -> str:
        """RFC 5228 §2.7.3 makes i;ascii-casemap the default; Pigeonhole's ``string`` test
        (RFC 5229 §5) compares with i;octet unless told otherwise, and so does mda."""
        return "i;octet" if test.name == "string" else "i;ascii-casemap"

    # -- tests ---------------------------------------------------------------------------------
    def test_exists(self, test: Test) -> bool:
        headers = self.ctx.message.headers
        return all(name.lower() in headers for name in self.expand_all(test.args[0], test.line))

    def test_size(self, test: Test) -> bool:
        kind, limit = test.tags["size"]
        size: int = self.ctx.message.size
        return size > int(limit) if kind == "over" else size < int(limit)

    def test_header(self, test: Test) -> bool:
        names = self.expand_all(test.args[0], test.line)
        keys = self.expand_all(test.args[1], test.line)
        message = self.ctx.message
        return self.matches(test, (v for n in names for v in message.header_values(n)), keys)

    def address_part(self, test: Test, addr: Address) -> str | None:
        """RFC 5228 §2.7.4 address parts and RFC 5233 :user/:detail; None when there is no detail."""
        part = test.tags.get("part", "all")
        if part == "all":
            return addr.all
        if part == "domain":
            return addr.domain
        if part == "localpart":
            return addr.localpart
        cut = min((i for i in (addr.localpart.find(d) for d in self.ctx.delimiters) if i >= 0), default=-1)
        if part == "user":
            return addr.localpart if cut < 0 else addr.localpart[:cut]
        return None if cut < 0 else addr.localpart[cut + 1 :]

    def test_address(self, test: Test) -> bool:
        names = self.expand_all(test.args[0], test.line)
        keys = self.expand_all(test.args[1], test.line)
        message = self.ctx.message

        def parts() -> Iterator[str]:
            for name in names:
                for addr in message.addresses(name):
                    part = self.address_part(test, addr)
                    if part is not None:
                        yield part

        return self.matches(test, parts(), keys)

    def test_envelope(self, test: Test) -> bool:
        keys = self.expand_all(test.args[1], test.line)

        def parts() -> Iterator[str]:
            for name in self.expand_all(test.args[0], test.line):
                if name.lower() == "from":
                    if not self.ctx.sender:
                        # RFC 5228 §5.4: the null reverse-path is the empty string, whatever the part.
                        if test.tags.get("part") != "detail":
                            yield ""
                        continue
                    address = self.ctx.sender
                elif name.lower() == "to":
                    # Pigeonhole compares "to" with the original recipient when it is known.
                    address = self.ctx.original_recipient or self.ctx.recipient
                else:
                    continue
                part = self.address_part(test, split_address(address))
                if part is not None:
                    yield part

        return self.matches(test, parts(), keys)

    def test_hasflag(self, test: Test) -> bool:
        keys = [f for k in self.expand_all(test.args[-1], test.line) for f in k.split()]
        if test.tags["variable_given"]:
            flags = [f for name in test.args[0] for f in self.variables.get(str(name).lower(), "").split()]
        else:
            flags = self.flags
        return self.matches(test, flags, keys)

    def test_string(self, test: Test) -> bool:
        return self.matches(test, self.expand_all(test.args[0], test.line),
                            self.expand_all(test.args[1], test.line))

    def test_body(self, test: Test) -> bool:
        transform = test.tags.get("transform", "text")
        types: tuple[str, ...] = ()
        if not isinstance(transform, str):  # (":content", content types)
            transform, content_types = transform
            types = tuple(self.expand_all(content_types, test.line))
        return self.matches(test, self.ctx.message.body_parts(transform, types),
                            self.expand_all(test.args[0], test.line))

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
            handle = "".join((
                reason,
                "<default-subject>" if subject is None else subject,
                "<default-from>" if from_ is None else from_,
                "<MIME>" if mime else "<NO-MIME>",
            ))
        pending = PendingVacation(
            reason=reason,
            subject=subject,
            from_=from_,
            addresses=tuple(self.expand_all(tags.get("addresses", ()), cmd.line)),
            mime=mime,
            handle=handle,
            days=int(tags.get("days", DEFAULT_DAYS)),
            line=cmd.line,
        )
        self.ctx.result.add_vacation(pending, self.script.name, cmd.line)

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
    script.
    """
    flags: tuple[str, ...] = ()
    for script in scripts:
        ctx.result.begin_script()
        run = _Run(script, ctx)
        run.run()
        flags = tuple(run.flags)
        if not ctx.result.still_kept():
            break
    return flags
