"""Directory descriptors kept open for about a second, so a stream of deliveries into the same Maildirs
does not open and close the same directories for every message (README, "Storage").

Each system call costs microseconds of CPU; a delivery into an existing Maildir used to open the mail
root, the Maildir, ``tmp/`` and ``new/`` and close them all again. An entry here holds such descriptors
for ``LIFETIME`` seconds from when they were opened (monotonic clock), never longer, so a directory
renamed or replaced is used at its configured path again within that time. The cache is bounded
(``CAPACITY`` entries, the least recently used closed first) and shared by the storage threads: a lease
counts the users of an entry, and an entry that expired or was evicted is closed when its last user
releases it, never under one. A forked worker starts with an empty cache: it closes its copies of the
parent's descriptors and never uses the parent's entries.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

LIFETIME = 1.0
"""Seconds a directory descriptor is reused after it was opened."""
CAPACITY = 128
"""Entries per cache; with at most five descriptors an entry (a Maildir, its folder, tmp, new, cur)."""
MAX_DESCRIPTORS = CAPACITY * 6
"""The most the caches of a process hold: a Maildir entry has at most five descriptors (the Maildir, its
folder, tmp, new, cur), a mail root's one; ``mda serve`` counts them in its open-files limit."""

K = TypeVar("K", bound=Hashable)


class CachedDirectories:
    """The descriptors opened for one key (a Maildir and its subdirectories, or a mail root), by name."""

    __slots__ = ("evicted", "expires", "fds", "path", "users")

    def __init__(self, fds: dict[str, int], path: Path, expires: float) -> None:
        self.fds = fds
        self.path = path
        """What the descriptors were opened as (the delivered copy's reported location)."""
        self.expires = expires
        self.users = 1
        self.evicted = False

    def close(self) -> None:
        for fd in set(self.fds.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


_caches: weakref.WeakSet[DirectoryCache[Hashable]] = weakref.WeakSet()


class DirectoryCache(Generic[K]):
    """A bounded, thread-safe map from a key to leased ``CachedDirectories``."""

    def __init__(
        self,
        capacity: int = CAPACITY,
        lifetime: float = LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, CachedDirectories] = OrderedDict()
        _caches.add(self)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._entries)

    def lease(self, key: K) -> CachedDirectories | None:
        """The live entry for ``key``, now used once more (``release`` it), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.clock() >= entry.expires:
                self._evict(key)
                return None
            entry.users += 1
            self._entries.move_to_end(key)
            return entry

    def insert(self, key: K, fds: dict[str, int], path: Path) -> CachedDirectories:
        """Keep freshly opened ``fds`` under ``key`` and return them leased once; replaces (closes once
        unused) an entry another thread opened for the same key meanwhile, and closes expired entries
        and the least recently used beyond the capacity."""
        now = self.clock()
        entry = CachedDirectories(fds, path, now + self.lifetime)
        with self._lock:
            if key in self._entries:
                self._evict(key)
            self._evict_expired(now)
            while len(self._entries) >= self.capacity:
                self._evict(next(iter(self._entries)))
            self._entries[key] = entry
        return entry

    def descriptor(self, entry: CachedDirectories, name: str, opener: Callable[[], int]) -> int:
        """The entry's descriptor ``name``, opened with ``opener`` the first time it is asked for."""
        with self._lock:
            fd = entry.fds.get(name)
        if fd is not None:
            return fd
        opened = opener()
        with self._lock:
            fd = entry.fds.setdefault(name, opened)
        if fd != opened:  # another user of the entry opened it meanwhile
            os.close(opened)
        return fd

    def release(self, entry: CachedDirectories) -> None:
        """One user of ``entry`` is done; an entry no longer in the cache is closed by its last user."""
        with self._lock:
            entry.users -= 1
            closing = entry.evicted and entry.users == 0
        if closing:
            entry.close()

    def discard(self, key: K, entry: CachedDirectories) -> None:
        """Take ``entry`` out of the cache (its directory is gone); it closes once its users are done."""
        with self._lock:
            if self._entries.get(key) is entry:
                self._evict(key)

    def _evict(self, key: K) -> None:
        """Remove ``key`` (lock held); close its entry at once when nobody uses it."""
        entry = self._entries.pop(key)
        entry.evicted = True
        if entry.users == 0:
            entry.close()

    def sweep(self) -> None:
        """Close the entries that expired (those in use close when their last user is done)."""
        now = self.clock()
        with self._lock:
            self._evict_expired(now)

    def _evict_expired(self, now: float) -> None:
        """Remove the entries expired at ``now`` (lock held)."""
        for old in [old for old, cached in self._entries.items() if now >= cached.expires]:
            self._evict(old)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here, so every entry is closed."""
        self._lock = threading.Lock()
        entries, self._entries = self._entries, OrderedDict()
        for entry in entries.values():
            entry.close()


def sweep_expired() -> None:
    """Close every cache's expired entries: called by a running server about once a second, so an idle
    process holds no directory open (an unmount of the mail filesystem is not kept busy)."""
    for cache in list(_caches):
        cache.sweep()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
