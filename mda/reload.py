"""Watch the configuration and users files, and tell the application when their content changed.

watchdog watching a file really watches its directory, and misses Kubernetes ConfigMap updates (the
``..data`` symlink is swapped, the file itself never changes) and can lose an editor's rename-replace.
So the *directories* are watched, and any event that may concern a watched name (the name itself, or a
``..`` entry of a ConfigMap) schedules one check ~0.2 s later: the files are re-read and hashed, and only
a content that differs from the running configuration's (``Config.digest``, the bytes it was parsed from)
triggers a reload. One check also runs as the watch starts, for an edit made while mda was starting. A
burst of events (an editor's save, a log file in the same directory) costs one check, never a reload per
event.

Nothing here polls: the checks follow inotify events (watchdog's Linux observer). A change made by
another host on a network file system raises no event on this one; ``SIGHUP`` covers that case.

The reload itself (load, validate, swap, or keep the old configuration) is the application's; this
module only watches (docs/architecture.md, "Parts": reload never mutates a live config).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from mda.config import current_digest

DEBOUNCE_SECONDS = 0.2

CHANGES = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
"""The events that can change a watched file; the kernel is asked for these only. Without the filter
inotify also reports every open and close in the directory: with ``./mail`` next to the configuration
(the embedded default's layout) that is two events per delivery, each taking the GIL in watchdog's threads."""


class _Events(FileSystemEventHandler):
    def __init__(self, watcher: ConfigWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(self.watcher.concerns(os.fsdecode(path)) for path in paths if path):
            self.watcher.poke_threadsafe()


class ConfigWatcher:
    """Calls ``on_change()`` on the event loop when the watched files' contents change."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        paths: Iterable[Path],
        on_change: Callable[[], Any],
        *,
        running: str | None = None,
        debounce: float = DEBOUNCE_SECONDS,
    ) -> None:
        self.loop = loop
        self.on_change = on_change
        self.debounce = debounce
        self.paths: list[Path] = []
        self.names: set[str] = set()
        self.observer: Any = Observer()
        self.watched_dirs: set[str] = set()
        self._pending: asyncio.TimerHandle | None = None
        self.last = ""
        self.set_paths(paths, running)

    def set_paths(self, paths: Iterable[Path], running: str | None = None) -> None:
        """Watch these files from now on, compared with ``running``, the digest of the version in use.

        After a reload ``running`` is the digest of the bytes that reload parsed, never a fresh read: one
        taken now would hide an edit made while the reload ran and lose that change. Without it (a bare
        watcher) the files as they are now are the baseline.
        """
        self.paths = [Path(path) for path in paths]
        self.names = {path.name for path in self.paths}
        for path in self.paths:
            directory = os.path.abspath(path.parent)
            if directory not in self.watched_dirs and os.path.isdir(directory):
                self.observer.schedule(_Events(self), directory, recursive=False, event_filter=CHANGES)
                self.watched_dirs.add(directory)
        self.last = running if running is not None else current_digest(self.paths)

    def concerns(self, path: str) -> bool:
        name = os.path.basename(path)
        return name in self.names or name.startswith("..")

    def start(self) -> None:
        self.observer.start()
        self.poke()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.observer.stop()
            self.observer.join(timeout=2)

    def poke_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self.poke)

    @property
    def check_pending(self) -> bool:
        """A check is scheduled and has not run yet (an observer can wait for it to have run)."""
        return self._pending is not None

    def poke(self) -> None:
        """Schedule one check; events arriving before it runs are covered by it."""
        if self._pending is None:
            self._pending = self.loop.call_later(self.debounce, self._check)

    def _check(self) -> None:
        self._pending = None
        current = current_digest(self.paths)
        if current != self.last:
            self.last = current
            self.on_change()
