"""Comparators (RFC 5228 §2.7.3, RFC 4790) and match types (RFC 5228 §2.7.1).

``:matches`` patterns become anchored regular expressions with one lazy group per wildcard, which both
bounds the work (no exponential backtracking of hand-written glob matchers) and yields the match
variables ``${1}``… of RFC 5229 §3.2 in Pigeonhole's order (each ``*`` as short as possible).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .budget import FOLD_COST, LITERAL_SEARCH_COST, WILDCARD_COST, Meter

#: Comparators every implementation offers (RFC 5228 §2.7.3).
CASEMAP = "i;ascii-casemap"
COMPARATORS = frozenset({CASEMAP, "i;octet"})
MATCH_TYPES = frozenset({"is", "contains", "matches"})

# i;ascii-casemap folds only a-z (RFC 4790 §9.2); str.upper() would also fold non-ASCII letters.
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_upper(value: str) -> str:
    """``value`` with a-z folded to upper case (i;ascii-casemap): ``str.upper`` for ASCII text, which
    folds nothing else there and is several times faster than ``translate`` with a table."""
    return value.upper() if value.isascii() else value.translate(_ASCII_UPPER)


class _Found:
    """Where a literal segment was found: the part of ``re.Match`` that matching uses (no groups)."""

    __slots__ = ("_end", "_start")
    lastindex = None

    def __init__(self, start: int, end: int) -> None:
        self._start, self._end = start, end

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end


class _Literal:
    """A segment without ``?``: found with ``str`` methods, so that the common ``*word*`` keys need no
    regular expression (compiling one per key made a script of many keys take seconds to compile)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def match(self, value: str, pos: int = 0) -> _Found | None:
        return _Found(pos, pos + len(self.text)) if value.startswith(self.text, pos) else None

    def search(self, value: str, pos: int = 0) -> _Found | None:
        found = value.find(self.text, pos)
        return None if found < 0 else _Found(found, found + len(self.text))


@dataclass(frozen=True, slots=True)
class _Glob:
    """A ``:matches`` key cut at its ``*`` wildcards; each segment is a literal, or a fixed-width regex
    whose ``?`` wildcards are groups."""

    segments: tuple[re.Pattern[str] | _Literal, ...]
    widths: tuple[int, ...]
    per_char: int
    """Work units per character of the value: what searching the pieces between ``*`` may cost."""


def _glob(key: str) -> _Glob:
    """Translate a folded ``:matches`` key; ``\\`` quotes the next character (RFC 5228 §2.7.1)."""
    segments: list[list[str | None]] = [[]]  # None: a ``?``
    wildcards = [False]
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "*":
            segments.append([])
            wildcards.append(False)
        elif ch == "?":
            segments[-1].append(None)
            wildcards[-1] = True
        else:
            if ch == "\\" and i + 1 < len(key):
                i += 1
                ch = key[i]
            segments[-1].append(ch)
        i += 1
    widths = tuple(len(segment) for segment in segments)
    per_char = sum(
        WILDCARD_COST * width if wildcard else LITERAL_SEARCH_COST
        for wildcard, width in zip(wildcards[1:-1], widths[1:-1], strict=True)
    )
    compiled = tuple(
        re.compile("".join("(.)" if ch is None else re.escape(ch) for ch in segment), re.DOTALL)
        if wildcard
        else _Literal("".join(ch for ch in segment if ch is not None))
        for segment, wildcard in zip(segments, wildcards, strict=True)
    )
    return _Glob(compiled, widths, per_char)


def _spans(m: re.Match[str] | _Found) -> list[tuple[int, int]]:
    return [m.span(g) for g in range(1, (m.lastindex or 0) + 1)]  # type: ignore[union-attr]  # _Found: none


def _glob_match(glob: _Glob, value: str) -> list[tuple[int, int]] | None:
    """Match without backtracking and return the spans of the wildcards.

    The first segment is anchored at the start, the last at the end, and every middle segment is placed
    leftmost: for ``*``/``?`` patterns that succeeds whenever any placement does, and it gives each ``*``
    the shortest text, as Pigeonhole does for RFC 5229 §3.2 match variables. The cost is
    O(len(value) × len(key)) whatever the key, and :class:`Keys` charges that worst case to the run's
    work limit before matching, so a hostile key cannot hang delivery."""
    segs, widths = glob.segments, glob.widths
    first = segs[0].match(value)
    if first is None:
        return None
    spans = _spans(first)
    if len(segs) == 1:
        return spans if first.end() == len(value) else None
    pos = first.end()
    for seg in segs[1:-1]:
        m = seg.search(value, pos)
        if m is None:
            return None
        spans.append((pos, m.start()))
        spans.extend(_spans(m))
        pos = m.end()
    start = len(value) - widths[-1]
    last = segs[-1].match(value, start) if start >= pos else None
    if last is None:
        return None
    spans.append((pos, start))
    spans.extend(_spans(last))
    return spans


class Keys:
    """One test's keys, ready to compare: folded by the comparator once, and for ``:matches`` cut into
    globs once; a script without variables builds them once per test (``keys_for`` caches them).

    ``per_char`` and ``fixed`` are what comparing one value with every key may cost, in work units
    (:mod:`mda.sieve.budget`): ``len(value) * per_char + fixed``, charged before the value is compared.
    """

    __slots__ = ("casemap", "fixed", "folded", "globs", "match_type", "per_char")

    def __init__(self, keys: tuple[str, ...], match_type: str, comparator: str) -> None:
        if match_type not in MATCH_TYPES:
            raise ValueError(f"unknown match type {match_type}")
        self.match_type = match_type
        self.casemap = comparator == CASEMAP
        self.folded = tuple(ascii_upper(key) for key in keys) if self.casemap else keys
        self.globs = tuple(_glob(key) for key in self.folded) if match_type == "matches" else ()
        fold = FOLD_COST if self.casemap else 0
        if match_type == "matches":
            self.per_char = fold + sum(glob.per_char for glob in self.globs)
            self.fixed = sum(sum(glob.widths) for glob in self.globs)
        else:  # a hash look-up for :is, a scan of the value per key for :contains
            self.per_char = fold + (1 if match_type == "is" else len(keys))
            self.fixed = len(keys)

    def first(self, values: Iterable[str], meter: Meter) -> list[str] | None:
        """The first value that matches any key (values in order, then keys in order), or None.

        Returns the match variables of that hit: ``[whole, group1, …]`` for ``:matches``, an empty list
        for the other match types, which set none. Each value is folded once. Each value's comparisons
        are charged to ``meter`` before they are made (raises ``WorkLimitExceeded`` past its limit).
        """
        casemap = self.casemap
        per_char, fixed = self.per_char, self.fixed
        if self.match_type == "matches":
            for value in values:
                meter.spend(len(value) * per_char + fixed)
                folded = ascii_upper(value) if casemap else value
                for glob in self.globs:
                    spans = _glob_match(glob, folded)
                    if spans is not None:
                        # Folding keeps every character in place: spans in ``folded`` are spans in ``value``.
                        return [value, *(value[s:e] for s, e in spans)]
            return None
        keys = self.folded
        if self.match_type == "is":
            for value in values:
                meter.spend(len(value) * per_char + fixed)
                if (ascii_upper(value) if casemap else value) in keys:
                    return []
            return None
        for value in values:  # contains
            meter.spend(len(value) * per_char + fixed)
            folded = ascii_upper(value) if casemap else value
            for key in keys:
                if key in folded:
                    return []
        return None


@lru_cache(maxsize=4096)
def keys_for(keys: tuple[str, ...], match_type: str, comparator: str) -> Keys:
    """``Keys`` for a script's constant keys (without variables): the same tuple comes on every delivery.
    Keys built from variables must not come here: they hold message text, and the cache would keep it."""
    return Keys(keys, match_type, comparator)
