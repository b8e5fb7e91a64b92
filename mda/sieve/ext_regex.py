"""``regex`` match type (draft-ietf-sieve-regex-01), run by RE2 so that no pattern can stall delivery.

Pigeonhole matches with POSIX extended regular expressions (``regcomp`` with ``REG_EXTENDED``,
``REG_ICASE`` under ``i;ascii-casemap``), unanchored, ``.`` matching a line break too. RE2 in
leftmost-longest mode accepts that syntax and always runs in time linear in the text, so a user's
``(a+)+$`` costs the same as ``a``. RE2 has no backreferences (``\\1``): a pattern using one is refused
when the script is compiled, naming the line, rather than silently matching something else.

A hit sets the match variables (RFC 5229 §3.2): ``${0}`` is the matched text, ``${N}`` group N, empty
for a group that took no part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from .budget import Meter

#: Work units (mda.sieve.budget) per character and key: RE2's automaton costs a few table steps a byte.
REGEX_COST = 8
#: RE2's memory for one compiled pattern; a pattern needing more is refused as too large.
MAX_PATTERN_MEMORY = 4 << 20
_BACKREFERENCE = re.compile(r"\\[1-9]")
#: glibc's word and buffer anchors, which RE2 spells differently (RE2 reads ``\<`` as a plain ``<``).
_GNU_ESCAPES = {"\\<": "\\b", "\\>": "\\b", "\\`": "\\A", "\\'": "\\z"}


class RegexError(ValueError):
    """A key that is not a regular expression mda can run; the message says why, for the user."""


def _re2() -> Any:
    """The RE2 bindings (``google-re2``), imported when a pattern is first compiled: mda itself runs
    without them (an interpreter that lacks them, e.g. for ``mda deliver``), and a script that uses
    ``:regex`` there gets a compile error saying what is missing."""
    try:
        import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
    except ImportError:
        raise RegexError("the regex extension needs the google-re2 package (pip install google-re2)") from None
    return re2


def _options(casemap: bool) -> Any:
    options = _re2().Options()
    options.longest_match = True  # POSIX: leftmost-longest
    options.dot_nl = True  # regexec without REG_NEWLINE: '.' and [^a] match a line break
    options.case_sensitive = not casemap
    options.log_errors = False
    options.max_mem = MAX_PATTERN_MEMORY
    return options


def translate(pattern: str) -> str:
    """The POSIX ERE ``pattern`` in RE2's syntax: inside a bracket expression a backslash is an ordinary
    character in POSIX and an escape in RE2, so it is doubled; glibc's ``\\<``, ``\\>`` (word
    boundaries, both read as RE2's ``\\b``), ``\\``` and ``\\'`` become RE2's. Raises :class:`RegexError` for a
    backreference (``\\1``…``\\9``) outside a bracket expression, which RE2 cannot run."""
    out: list[str] = []
    i, bracket = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if bracket:
            if ch == "]":
                bracket = False
            elif ch == "\\":
                ch = "\\\\"
            elif pattern.startswith(("[:", "[.", "[="), i):
                close = pattern.find(pattern[i + 1] + "]", i + 2)  # "[:alpha:]" ends at ":]"
                end = close + 2 if close >= 0 else len(pattern)
                out.append(pattern[i:end])
                i = end
                continue
        elif ch == "\\":
            if _BACKREFERENCE.match(pattern, i):
                raise RegexError(
                    f"backreference '{pattern[i : i + 2]}' in regular expression is not supported (linear-time engine)"
                )
            ch = _GNU_ESCAPES.get(pattern[i : i + 2], pattern[i : i + 2])
            i += 1
        elif ch == "[":
            bracket = True
            # ']' right after '[' or '[^' is a literal member of the set.
            lead = "[^]" if pattern.startswith("^]", i + 1) else "[]" if pattern.startswith("]", i + 1) else "["
            if lead != "[":
                ch = lead[:-1] + "\\]"
                i += len(lead) - 1
        out.append(ch)
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str, casemap: bool) -> Any:
    """Compile one key; raises :class:`RegexError` naming the problem."""
    re2 = _re2()
    try:
        return re2.compile(translate(pattern), _options(casemap))
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RegexError(f"invalid regular expression '{pattern}': {detail}") from None


_QUANTIFIERS = frozenset("*+?{")
_INTERVAL = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_BREAKS = frozenset(".^$")
_CLASS_ESCAPES = frozenset("bBdDsSwWAz")
"""RE2 escapes of one letter that take no argument (assertions and character classes)."""


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Texts every match of the RE2 ``pattern`` contains: the runs of plain characters at its top level
    that no quantifier makes optional (``python-(dev|ideas)\\.python\\.org`` gives ``python-`` and
    ``.python.org``). None when the pattern has an alternation at the top level or a construct this
    scan does not follow (``\\Q``, an unclosed group or bracket): then nothing is required.

    Only ever too little is taken (a group, a bracket expression, an escape other than a quoted
    punctuation character end a run), so a value lacking one of these texts cannot match.
    """
    if "(?" in pattern:  # flags such as (?i) change how the rest matches
        return None
    runs: list[str] = []
    run: list[str] = []

    def cut() -> None:
        if run:
            runs.append("".join(run))
            run.clear()

    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "|":
            return None
        if ch in _QUANTIFIERS:
            if run:
                run.pop()  # the quantified character may be absent (or repeated)
            cut()
            interval = _INTERVAL.match(pattern, i)
            i = interval.end() if interval else i + 1
        elif ch == "\\":
            if i + 1 >= n:
                return None
            escaped = pattern[i + 1]
            if escaped.isascii() and not escaped.isalnum():
                run.append(escaped)
            elif escaped in _CLASS_ESCAPES:
                cut()  # \b, \d, \w...: no plain character
            else:
                return None  # \x41, \pL, \123, \Q...\E: escapes with arguments are not followed
            i += 2
        elif ch in "([":  # a group or a bracket expression: skipped whole
            end = (_group_end if ch == "(" else _bracket_end)(pattern, i)
            if end < 0:
                return None
            cut()
            i = end
        elif ch in _BREAKS or ch == ")":
            cut()
            i += 1
        else:
            run.append(ch)
            i += 1
    cut()
    return tuple(runs)


def _bracket_end(pattern: str, start: int) -> int:
    """The index after the bracket expression starting at ``start``, or -1."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
        elif pattern.startswith("[:", i):
            close = pattern.find(":]", i + 2)
            if close < 0:
                return -1
            i = close + 2
        elif pattern[i] == "]":
            return i + 1
        else:
            i += 1
    return -1


def _group_end(pattern: str, start: int) -> int:
    """The index after the group opened at ``start`` (nested groups, brackets and escapes skipped), or -1."""
    depth, i = 0, start
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _bracket_end(pattern, i)
            if i < 0:
                return -1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


class _Pattern:
    """One compiled key and the texts a value must contain for it to match (:func:`required_literals`),
    checked in Python first: most values lack them, and a call into RE2 releases the GIL, which in the
    server lets the session thread in before the delivery thread gets it back."""

    __slots__ = ("casemap", "compiled", "groups", "literals")

    def __init__(self, key: str, casemap: bool) -> None:
        self.compiled = compile_pattern(key, casemap)
        self.groups: int = self.compiled.groups
        self.casemap = casemap
        literals = required_literals(translate(key)) or ()
        if casemap:  # compared folded, and only where ASCII folding is all of RE2's case folding
            literals = tuple(text.lower() for text in literals if text.isascii())
        self.literals = literals

    def search(self, value: str) -> Any:
        # Plain loops: a generator per value (``any(...)``) costs more than the look-ups it makes.
        if self.literals:
            if self.casemap:
                if value.isascii():
                    folded = value.lower()
                    for text in self.literals:
                        if text not in folded:
                            return None
            else:
                for text in self.literals:
                    if text not in value:
                        return None
        return self.compiled.search(value)


class RegexKeys:
    """One test's ``:regex`` keys, with the ``first`` method of :class:`mda.sieve.match.Keys`."""

    __slots__ = ("patterns",)

    def __init__(self, keys: tuple[str, ...], comparator: str) -> None:
        casemap = comparator == "i;ascii-casemap"
        self.patterns = tuple(_Pattern(key, casemap) for key in keys)

    def first(self, values: Iterable[str], meter: Meter) -> list[str] | None:
        """Like :meth:`mda.sieve.match.Keys.first`; RE2 is linear, so each value costs its length times
        :data:`REGEX_COST` per key, charged before it is searched."""
        for value in values:
            meter.spend((len(value) + 1) * REGEX_COST * len(self.patterns))
            for pattern in self.patterns:
                m = pattern.search(value)
                if m is not None:
                    return [m.group(g) or "" for g in range(pattern.groups + 1)]
        return None
