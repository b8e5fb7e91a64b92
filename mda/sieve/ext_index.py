"""``index`` (RFC 5260 §6): ``:index N`` picks the Nth occurrence of a header field, ``:last`` counts
from the end. Spam rules use it to test the Received field their own server added (``:index 1``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def select(items: Sequence[T], tags: Mapping[str, Any]) -> Sequence[T]:
    """The occurrence ``:index`` names (one item, or none when there are fewer), or all without it."""
    index = tags.get("index")
    if index is None:
        return items
    if index < 1 or index > len(items):
        return ()
    return (items[-index],) if "last" in tags else (items[index - 1],)
