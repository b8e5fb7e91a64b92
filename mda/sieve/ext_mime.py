"""``mime``, ``foreverypart`` and ``extracttext`` (RFC 5703): tests on the MIME parts of a message.

``foreverypart`` runs its block once per MIME part, depth first, the message itself first (as
Pigeonhole does); nested, it visits the current part's descendants. Inside it, ``header :mime``,
``address :mime`` and ``exists :mime`` look at the current part; outside, at the message, and with
``:anychild`` at a part and all its descendants. ``:type``, ``:subtype``, ``:contenttype`` and
``:param`` read the structured value (``text``, ``plain``, ``text/plain``, parameter values; a missing
parameter is the empty string, as in Pigeonhole). ``extracttext`` stores the decoded text of the
current ``text/*`` part in a variable (HTML with its tags removed and white space runs made one space,
an approximation of Pigeonhole's HTML-to-text conversion).

Hostile structure is bounded: at most :data:`MAX_PARTS` parts and :data:`MAX_DEPTH` levels are seen.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from email.message import Message as MimePart
from typing import TYPE_CHECKING

from .message import decode_rfc2047, parse_address_list

if TYPE_CHECKING:
    from .compiler import Command, Test
    from .interpreter import _Run

MAX_PARTS = 1000
MAX_DEPTH = 32
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_BLOCK_END = re.compile(r"</(?:p|div|li|tr|h[1-6]|blockquote|table)\s*>|<br\s*/?>", re.IGNORECASE)


class Break(Exception):
    """``break`` (RFC 5703 §3.2), with the loop name it leaves (None: the innermost)."""

    def __init__(self, name: str | None) -> None:
        super().__init__(name)
        self.name = name


def walk(part: MimePart, depth: int = 0) -> Iterator[MimePart]:
    """``part`` and its descendants, depth first, bounded in depth."""
    yield part
    if depth < MAX_DEPTH and part.is_multipart():
        payload = part.get_payload()
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, MimePart):
                yield from walk(child, depth + 1)


def _parts(run: _Run, anychild: bool) -> list[MimePart]:
    current = run.mime_part
    if current is None:
        try:
            current = run.ctx.message.charged_mime()
        except RecursionError:  # absurdly nested MIME: no parts
            return []
    if not anychild:
        return [current]
    out = []
    for part in walk(current):
        out.append(part)
        if len(out) >= MAX_PARTS:
            break
    return out


def _structured(option: tuple[str, ...] | str, value: str) -> list[str]:
    """The piece of a Content-Type-like value that ``:type``/``:subtype``/``:contenttype``/``:param``
    asks for."""
    head, _, params = value.partition(";")
    head = head.strip().lower()
    kind, _, subtype = head.partition("/")
    if option == "type":
        return [kind]
    if option == "subtype":
        return [subtype]
    if option == "contenttype":
        return [head]
    names = option[1] if isinstance(option, tuple) else ()
    found: dict[str, str] = {}
    for param in params.split(";"):
        name, eq, pvalue = param.partition("=")
        if eq:
            found.setdefault(name.strip().lower(), pvalue.strip().strip('"'))
    return [found.get(str(n).lower(), "") for n in names]


def _raw(part: MimePart, name: str) -> list[str]:
    values = part.get_all(name) or []
    return [decode_rfc2047(str(v).replace("\r", "").replace("\n", "")).strip(" \t") for v in values]


def header_values(run: _Run, test: Test, names: list[str]) -> list[str]:
    option = test.tags.get("mimeopt")
    out: list[str] = []
    for part in _parts(run, "anychild" in test.tags):
        for name in names:
            for value in _raw(part, name):
                out.extend(_structured(option, value) if option is not None else [value])
    return out


def address_values(run: _Run, test: Test, names: list[str]) -> list[str]:
    out: list[str] = []
    for part in _parts(run, "anychild" in test.tags):
        fields = [v for name in names for v in _raw(part, name)]
        for address in parse_address_list(fields) if fields else ():
            value = run.address_part(test, address)
            if value is not None:
                out.append(value)
    return out


def exists(run: _Run, test: Test, names: list[str]) -> bool:
    parts = _parts(run, "anychild" in test.tags)
    return all(any(part.get_all(name) for part in parts) for name in names)


def loop(command: Command, steps: tuple[Callable[[_Run], None], ...]) -> Callable[[_Run], None]:
    """The step of a ``foreverypart`` command, its block already lowered to ``steps``."""
    name = command.tags.get("name")

    def run_loop(run: _Run) -> None:
        outer = run.mime_part
        try:
            parts = list(walk(run.ctx.message.charged_mime())) if outer is None else list(walk(outer))[1:]
        except RecursionError:
            parts = []
        try:
            for part in parts[:MAX_PARTS]:
                run.mime_part = part
                for step in steps:
                    step(run)
        except Break as exc:
            if exc.name is not None and exc.name != name:
                raise
        finally:
            run.mime_part = outer

    return run_loop


def do_break(run: _Run, cmd: Command) -> None:
    raise Break(cmd.tags.get("name"))


def extract_text(part: MimePart | None) -> str:
    """The decoded text of a ``text/*`` leaf part (HTML without its tags), else the empty string."""
    if part is None or part.is_multipart() or part.get_content_maintype() != "text":
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    except LookupError:
        text = payload.decode("utf-8", errors="replace")
    if part.get_content_subtype() == "html":
        text = _SPACE.sub(" ", _TAG.sub("", _BLOCK_END.sub(" ", text))).lstrip()
    return text


def do_extracttext(run: _Run, cmd: Command) -> None:
    from .interpreter import MAX_VARIABLE_SIZE, _modify

    text = extract_text(run.mime_part)
    if "count" in cmd.tags:
        text = text[: int(cmd.tags["count"])]
    run.variables[str(cmd.args[0]).lower()] = _modify(text, cmd.tags)[:MAX_VARIABLE_SIZE]
