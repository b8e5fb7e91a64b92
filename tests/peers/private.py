"""The life of a private database or directory server in a test: a directory of its own, started, stopped."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar


class PrivateServer(Protocol):
    def init(self) -> None:
        """Create its data in its directory and start it."""

    def stop(self) -> None:
        """Stop it (also when it was never started or is stopped already)."""


S = TypeVar("S", bound=PrivateServer)


@contextmanager
def private_server(make: Callable[[Path], S], prefix: str) -> Iterator[S]:
    """``make(directory)`` in a fresh temporary directory, initialised; stopped and removed at the end,
    also when the test fails."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = make(directory)
    try:
        server.init()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
