"""String values that may hold variable references (RFC 5229 §3).

Without ``require "variables"`` a string is a plain ``str``. With it, strings containing ``${`` are
compiled once into a :class:`Template` of literal parts and references, so that expansion at run time is
a join, not a re-scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5229 §3: variable-ref = "${" [namespace] variable-name "}"; num-variable = 1*DIGIT.
_REFERENCE = re.compile(r"\$\{((?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}")


@dataclass(frozen=True, slots=True)
class Ref:
    """``${name}`` (lower case: variable names are case-insensitive, §3) or ``${N}`` (a match variable)."""

    name: str
    index: int | None


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Ref, ...]


Value = str | Template


def compile_string(text: str, variables: bool) -> Value:
    """Split ``text`` at its variable references; a malformed ``${…}`` stays literal (§3)."""
    if not variables or "${" not in text:
        return text
    parts: list[str | Ref] = []
    pos = 0
    for m in _REFERENCE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        name = m.group(1)
        parts.append(Ref(name, int(name)) if name.isdigit() else Ref(name.lower(), None))
        pos = m.end()
    if pos == 0:
        return text
    if pos < len(text):
        parts.append(text[pos:])
    return Template(tuple(parts))
