"""A time-bounded cache of answers: found for ``ttl``, not found for ``negative_ttl``; failures never.

One cache per configuration snapshot: a reload builds new sources and an empty cache, so an edited
query or a removed user takes effect at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl: float, negative_ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, V | None]] = {}

    def get(self, key: str) -> tuple[bool, V | None]:
        """(True, value) for a fresh entry (``None`` = known not to exist), else (False, None)."""
        entry = self.entry(key)
        return (False, None) if entry is None else (True, entry[1])

    def entry(self, key: str) -> tuple[float, V | None] | None:
        """``(expires, value)`` for a fresh entry (on this cache's clock), else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry

    def put(self, key: str, value: V | None) -> float:
        """Keep ``value``; returns when it expires (now, when it is not kept)."""
        ttl = self.ttl if value is not None else self.negative_ttl
        if ttl <= 0 or self.size == 0:
            return self._clock()
        with self._lock:
            if len(self._entries) >= self.size:
                now = self._clock()
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= self.size:
                    self._entries.clear()
            expires = self._clock() + ttl
            self._entries[key] = (expires, value)
        return expires
