"""``relational`` (RFC 5231: ``:count`` and ``:value``) and the ``i;ascii-numeric`` comparator (RFC 4790 §9.1).

Spam filters compare scores (``header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5"``)
and count recipients (``address :count "gt" ["to", "cc"] "10"``). Each comparator gives every string a
sort key; a relation then compares two keys. ``i;ascii-numeric`` reads the leading digits of a string
and ranks a string that does not start with a digit above every number, equal to any other such string.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from .budget import FOLD_COST, Meter
from .match import ascii_upper

NUMERIC = "i;ascii-numeric"
#: The relations of RFC 5231 §5 and what they compare with.
RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
}

_INFINITY = (1, 0)


def numeric_key(value: str) -> tuple[int, int]:
    """RFC 4790 §9.1: the number the leading US-ASCII digits spell; no leading digit is positive infinity."""
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    return (0, int(value[:end])) if end else _INFINITY


def sort_key(comparator: str) -> Callable[[str], object]:
    """How ``comparator`` orders strings. ``i;octet`` compares octets: for UTF-8 text that is the order
    of code points, which is Python's ``str`` order; ``i;ascii-casemap`` first folds a-z to upper case."""
    if comparator == NUMERIC:
        return numeric_key
    if comparator == "i;octet":
        return str
    return ascii_upper


class RelationalKeys:
    """One test's keys for ``:value``, ``:count`` or an ``:is`` under ``i;ascii-numeric``, with the
    ``first`` method of :class:`mda.sieve.match.Keys` (these match types set no match variables)."""

    __slots__ = ("count", "keys", "relation", "sort")

    def __init__(self, keys: tuple[str, ...], match_type: str, relation: str, comparator: str) -> None:
        self.sort = sort_key(comparator)
        self.relation = RELATIONS[relation]
        self.keys = tuple(self.sort(key) for key in keys)
        self.count = match_type == "count"

    def first(self, values: Iterable[str], meter: Meter) -> list[str] | None:
        """Like :meth:`mda.sieve.match.Keys.first`; each value costs its length per key, charged first."""
        relation, keys, sort = self.relation, self.keys, self.sort
        if self.count:
            # RFC 5231 §4.1: the number of values is compared as a decimal string, with the comparator.
            counted = sort(str(sum(1 for _ in values)))
            meter.spend(len(keys))
            return [] if any(relation(counted, key) for key in keys) else None
        for value in values:
            meter.spend((len(value) + 1) * (FOLD_COST + len(keys)))
            folded = sort(value)
            if any(relation(folded, key) for key in keys):
                return []
        return None
