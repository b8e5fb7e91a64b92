"""Comparators (RFC 5228 §2.7.3, RFC 4790) and match types (RFC 5228 §2.7.1).

``:matches`` patterns become anchored regular expressions with one lazy group per wildcard, which both
bounds the work (no exponential backtracking of hand-written glob matchers) and yields the match
variables ``${1}``… of RFC 5229 §3.2 in Pigeonhole's order (each ``*`` as short as possible).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

#: Comparators every implementation offers (RFC 5228 §2.7.3).
COMPARATORS = frozenset({"i;ascii-casemap", "i;octet"})
MATCH_TYPES = frozenset({"is", "contains", "matches"})

# i;ascii-casemap folds only a-z (RFC 4790 §9.2); str.upper() would also fold non-ASCII letters.
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def fold(value: str, comparator: str) -> str:
    """Bring ``value`` into the comparator's canonical form."""
    return value.translate(_ASCII_UPPER) if comparator == "i;ascii-casemap" else value


@dataclass(frozen=True, slots=True)
class _Glob:
    """A ``:matches`` key cut at its ``*`` wildcards; each segment is a fixed-width regex whose ``?``
    wildcards are groups."""

    segments: tuple[re.Pattern[str], ...]
    widths: tuple[int, ...]


@lru_cache(maxsize=4096)
def _glob(key: str) -> _Glob:
    """Translate a folded ``:matches`` key; ``\\`` quotes the next character (RFC 5228 §2.7.1)."""
    segments: list[list[str]] = [[]]
    widths = [0]
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "*":
            segments.append([])
            widths.append(0)
        else:
            if ch == "?":
                segments[-1].append("(.)")
            else:
                if ch == "\\" and i + 1 < len(key):
                    i += 1
                    ch = key[i]
                segments[-1].append(re.escape(ch))
            widths[-1] += 1
        i += 1
    return _Glob(tuple(re.compile("".join(s), re.DOTALL) for s in segments), tuple(widths))


def _spans(m: re.Match[str]) -> list[tuple[int, int]]:
    return [m.span(g) for g in range(1, (m.lastindex or 0) + 1)]


def _glob_match(glob: _Glob, value: str) -> list[tuple[int, int]] | None:
    """Match without backtracking and return the spans of the wildcards.

    The first segment is anchored at the start, the last at the end, and every middle segment is placed
    leftmost: for ``*``/``?`` patterns that succeeds whenever any placement does, and it gives each ``*``
    the shortest text, as Pigeonhole does for RFC 5229 §3.2 match variables. The cost is
    O(len(value) × len(key)) whatever the key, so a hostile key cannot hang delivery."""
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


def match_value(value: str, key: str, match_type: str, comparator: str) -> list[str] | None:
    """Compare one value against one key.

    Returns ``None`` on no match, else the match variables (``[whole, group1, …]`` for ``:matches``,
    an empty list for the other match types, which set none).
    """
    v = fold(value, comparator)
    k = fold(key, comparator)
    if match_type == "is":
        return [] if v == k else None
    if match_type == "contains":
        return [] if k in v else None
    if match_type == "matches":
        spans = _glob_match(_glob(k), v)
        if spans is None:
            return None
        # Folding keeps every character in place, so spans found in ``v`` are read back from ``value``.
        return [value, *(value[s:e] for s, e in spans)]
    raise ValueError(f"unknown match type {match_type}")
