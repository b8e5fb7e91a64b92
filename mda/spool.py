"""The message as received: read once from the wire, shared by every recipient's copy.

Small messages stay in memory; larger ones move to an anonymous temporary file (``O_TMPFILE`` where the
filesystem has it, so a crash leaves nothing behind to clean up). Memory stays bounded whatever the
message size. The body is stored with LF line endings, as Maildir and mbox readers expect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MEMORY_LIMIT = 2 * 1024 * 1024
"""Above this many bytes the spool moves to a file. Most mail (and the 1 MiB benchmark cell) then never
touches the disk twice, and 16 concurrent large messages hold at most 32 MiB of buffers — within the
target of 64 MiB plus the largest message in flight."""

HEADER_SCAN_LIMIT = 1024 * 1024
"""Loop and hop checks read at most this much of the header section (a 100k-line header is hostile)."""


class Spool:
    """An append-only byte buffer that spills to an unnamed file, then is read by every store."""

    def __init__(self, directory: Path | None = None, memory_limit: int = MEMORY_LIMIT) -> None:
        self._directory = str(directory) if directory else tempfile.gettempdir()
        self._memory_limit = memory_limit
        self._buffer = bytearray()
        self._fd: int | None = None
        self._size = 0
        self._newlines = 0
        self._head = bytearray()
        self._head_done = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def newlines(self) -> int:
        """LF count: the size with CRLF endings (IMAP RFC822.SIZE, Maildir ``W=``) is size + newlines."""
        return self._newlines

    @property
    def in_memory(self) -> bool:
        return self._fd is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes; spill to a file once past the memory limit."""
        if not data:
            return
        if isinstance(data, memoryview):
            data = data.tobytes()
        if not self._head_done:
            self._collect_head(bytes(data))
        self._size += len(data)
        self._newlines += data.count(b"\n")
        if self._fd is None:
            self._buffer += data
            if len(self._buffer) > self._memory_limit:
                self._spill()
        else:
            write_all(self._fd, data)

    def _collect_head(self, data: bytes) -> None:
        # Only the new bytes (and the one before them) are searched: many small writes stay linear.
        searched_from = max(len(self._head) - 1, 0)
        room = HEADER_SCAN_LIMIT - len(self._head)
        self._head += data[:room]
        if (
            self._head.find(b"\n\n", searched_from) >= 0
            or len(self._head) >= HEADER_SCAN_LIMIT
            or self._head.startswith(b"\n")
        ):
            self._head_done = True

    def header_section(self) -> bytes:
        """The header section (up to the first empty line), at most ``HEADER_SCAN_LIMIT`` bytes."""
        head = bytes(self._head)
        if head.startswith(b"\n"):
            return b""
        end = head.find(b"\n\n")
        return head[: end + 1] if end >= 0 else head

    def _spill(self) -> None:
        self._fd = _anonymous_file(self._directory)
        write_all(self._fd, self._buffer)
        self._buffer = bytearray()

    def copy_to(self, fd: int) -> None:
        """Write the whole spool to ``fd`` at its current offset (kernel copy when spilled)."""
        if self._fd is None:
            write_all(fd, self._buffer)
            return
        offset = 0
        while offset < self._size:
            count = min(self._size - offset, 1 << 30)
            try:
                sent = os.copy_file_range(self._fd, fd, count, offset)
            except OSError:
                sent = os.sendfile(fd, self._fd, offset, count)
            if sent <= 0:
                raise OSError("short copy from spool")
            offset += sent

    def read_all(self) -> bytes:
        """The whole message; for tools and Sieve, never on the delivery hot path for large messages."""
        if self._fd is None:
            return bytes(self._buffer)
        return os.pread(self._fd, self._size, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffer = bytearray()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a write to a file may be short, e.g. on a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _anonymous_file(directory: str) -> int:
    """An unnamed file: ``O_TMPFILE`` needs no cleanup after a crash; else create and unlink at once."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(directory, flags | os.O_TMPFILE, 0o600)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix="mda-spool-", dir=directory)
    os.unlink(name)
    return fd
