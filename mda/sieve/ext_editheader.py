"""editheader (RFC 5293): ``addheader`` and ``deleteheader`` change the message the script sees.

The change is made to :class:`~mda.sieve.message.SieveMessage` itself, so later tests (``header``,
``exists``, ``address``…) of this script and of the scripts after it see the edited header, as in
Pigeonhole. The caller stores the edited header section (``Outcome.header``) in front of the unchanged
body, for stored copies and redirects (Pigeonhole sends the edited message to both); vacation replies
and notifications are new messages and carry none of it.

Protected fields cannot be deleted; the command is then ignored (Pigeonhole warns and goes on):
``Received`` and ``Auto-Submitted`` (RFC 5293 §6, Pigeonhole's default; both may be added, as there),
and the trace fields mda writes in front of each copy, ``Return-Path`` and ``Delivered-To``. A
``Return-Path`` is not added either (RFC 5321 §4.4: one, written by the delivery).
"""

from __future__ import annotations

import re
from email.header import Header
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compiler import Command
    from .interpreter import _Run

#: Fields a script may not delete.
PROTECTED = frozenset({"received", "auto-submitted", "return-path", "delivered-to"})
#: Fields a script may not add.
NOT_ADDED = frozenset({"return-path"})
#: Pigeonhole's ``sieve_editheader_max_header_size``: a longer added field is a runtime error.
MAX_FIELD_SIZE = 2048
#: A field name (RFC 5322 §3.6.8 ftext: printable ASCII except ':').
FIELD_NAME = re.compile(r"[!-9;-~]+")
#: Longest line written before folding (RFC 5322 §2.1.1 recommends 78).
FOLD_AT = 78


def valid_field_name(name: str) -> bool:
    return FIELD_NAME.fullmatch(name) is not None


def field_bytes(name: str, value: str) -> bytes:
    """``Name: value`` with a line end: line breaks in the value become folds, non-ASCII text becomes
    RFC 2047 encoded words, long lines are folded at whitespace."""
    lines = [line.strip(" \t") for line in re.split(r"\r\n|\r|\n", value)]
    text = " ".join(line for line in lines if line)
    if not text.isascii():
        text = Header(text, "utf-8", header_name=name).encode(linesep="\n")
        return f"{name}: {text}\n".encode("ascii")
    return (_fold(f"{name}: {text}") + "\n").encode("ascii")


def _fold(line: str) -> str:
    out: list[str] = []
    while len(line) > FOLD_AT:
        cut = line.rfind(" ", 0, FOLD_AT)
        if cut <= 0:
            cut = line.find(" ", FOLD_AT)
            if cut < 0:
                break
        out.append(line[:cut])
        line = "\t" + line[cut + 1 :]
    out.append(line)
    return "\n".join(out)


def do_addheader(run: _Run, cmd: Command) -> None:
    name = run.expand(cmd.args[0], cmd.line)
    value = run.expand(cmd.args[1], cmd.line)
    if not valid_field_name(name):
        raise run.error(cmd.line, f"addheader: invalid field name '{name}'")
    if name.lower() in NOT_ADDED:
        return
    data = field_bytes(name, value)
    if len(data) > MAX_FIELD_SIZE:
        raise run.error(cmd.line, f"addheader: field larger than {MAX_FIELD_SIZE} bytes")
    run.ctx.meter.spend(len(data))
    run.ctx.message.add_field(data, last="last" in cmd.tags)


def do_deleteheader(run: _Run, cmd: Command) -> None:
    name = run.expand(cmd.args[0], cmd.line)
    if not valid_field_name(name):
        raise run.error(cmd.line, f"deleteheader: invalid field name '{name}'")
    if name.lower() in PROTECTED:
        return
    message = run.ctx.message
    values = message.header_values(name.lower())
    if not values:
        return
    positions = range(len(values))
    index = cmd.tags.get("index")
    if index is not None:
        if index > len(values):
            return
        at = len(values) - index if "last" in cmd.tags else index - 1
        positions = range(at, at + 1)
    test = cmd.tags.get("test")
    if test is not None:
        keys = run.expand_all(cmd.args[1], cmd.line)
        chosen = [i for i in positions if run.matches(test, [values[i]], keys)]
    else:
        chosen = list(positions)
    if chosen:
        message.delete_fields(name.lower(), frozenset(chosen))
