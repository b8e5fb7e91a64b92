"""Match types and comparators beyond RFC 5228's, behind one entry point for the interpreter.

``:is``/``:contains``/``:matches`` under ``i;octet`` and ``i;ascii-casemap`` stay in
:mod:`mda.sieve.match` (the hot path of ordinary filters); ``:value``/``:count`` (RFC 5231),
``:regex`` and the ``i;ascii-numeric`` comparator come here. Prepared keys have the same ``first``
method as :class:`mda.sieve.match.Keys`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

from .budget import Meter
from .ext_regex import RegexError, RegexKeys, compile_pattern
from .ext_relational import NUMERIC, RELATIONS, RelationalKeys

EXTENDED_MATCH_TYPES = frozenset({"value", "count", "regex"})
#: Comparators that need ``require "comparator-NAME"`` (RFC 5228 §2.7.3).
EXTRA_COMPARATORS = frozenset({NUMERIC})


class Matcher(Protocol):
    def first(self, values: Iterable[str], meter: Meter) -> list[str] | None: ...


def is_extended(match_type: str, comparator: str) -> bool:
    return match_type in EXTENDED_MATCH_TYPES or comparator == NUMERIC


def prepare(keys: tuple[str, ...], match_type: str, relation: str | None, comparator: str) -> Matcher:
    """Keys ready to compare; raises :class:`RegexError` for a ``:regex`` key RE2 cannot run."""
    if match_type == "regex":
        return RegexKeys(keys, comparator)
    # ``:is`` under i;ascii-numeric is numeric equality (RFC 4790 §9.1).
    return RelationalKeys(keys, match_type, relation or "eq", comparator)


@lru_cache(maxsize=1024)
def prepare_cached(keys: tuple[str, ...], match_type: str, relation: str | None, comparator: str) -> Matcher:
    """:func:`prepare` for a script's constant keys (never for keys built from variables)."""
    return prepare(keys, match_type, relation, comparator)


def check(match_type: str, relation: object, comparator: str, keys: Iterable[object]) -> str | None:
    """What is wrong with this combination, decided when the script is compiled, or None."""
    if match_type in ("value", "count") and relation not in RELATIONS:
        return f"invalid relation '{relation}' (expected one of {', '.join(RELATIONS)})"
    if comparator == NUMERIC and match_type in ("contains", "matches", "regex"):
        return f"comparator '{NUMERIC}' does not support the :{match_type} match type"
    if match_type == "regex":
        if comparator not in ("i;octet", "i;ascii-casemap"):
            return f"comparator '{comparator}' does not support the :regex match type"
        for key in keys:
            if isinstance(key, str):
                try:
                    compile_pattern(key, comparator == "i;ascii-casemap")
                except RegexError as exc:
                    return str(exc)
    return None
