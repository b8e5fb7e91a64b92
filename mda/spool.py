"""The message as received: read once from the wire, shared by every recipient's copy.

Small messages stay in memory; larger ones move to an anonymous temporary file (``O_TMPFILE`` where the
filesystem has it, so a crash leaves nothing behind to clean up). Memory stays bounded whatever the
message size and however many sessions are in DATA at once: one spool holds at most ``MEMORY_LIMIT``
bytes in memory, and all spools of the process together at most what their ``MemoryBudget`` grants
(``limits.spool_memory``); a spool that gets no more memory spills to its file. The body is stored with
LF line endings, as Maildir and mbox readers expect.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

MEMORY_LIMIT = 2 * 1024 * 1024
"""Above this many bytes the spool moves to a file. Most mail (and the 1 MiB benchmark cell) then never
touches the disk twice, and 16 concurrent large messages hold at most 32 MiB of buffers — within the
target of 64 MiB plus the largest message in flight."""

SMALL_LIMIT = 64 * 1024
"""Up to this many bytes the spool is an ordinary ``bytearray``; beyond, an anonymous ``mmap`` of
``MEMORY_LIMIT`` bytes (pages are only backed once written). Unmapping gives the memory back to the
system at once, where freed heap blocks of a few hundred sessions can stay resident for the life of the
process; and most mail never pays for the two system calls."""

KEPT_MAPPINGS = 4
"""Unmapped spool mappings of ``MEMORY_LIMIT`` bytes a process keeps for its next messages (8 MiB at
most). A fresh anonymous mapping costs a page fault for every 4 KiB written, which here costs as much as
converting the bytes; a kept one has its pages already. More would hold memory an idle server should
give back (README, "Memory")."""

HEADER_SCAN_LIMIT = 1024 * 1024
"""Loop and hop checks read at most this much of the header section (a 100k-line header is hostile)."""


class MemoryBudget:
    """Bytes that all in-memory spools of one process may hold together; what is left spills to files.

    Sessions run on one event loop, but the lock keeps the count right whatever thread closes a spool.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they fit under the limit."""
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size


class MappingPool:
    """Anonymous mappings of one size, kept after a spool is done with them for the next spool to use.

    A mapping comes back only when nothing reads it any more (the spool counts its views), so a reused
    mapping is never one that a store is still copying from; its old bytes are overwritten before any
    are read (a spool reads only what it wrote).
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> mmap.mmap:
        """A mapping of ``size`` bytes: a kept one when it has that size, else a new one."""
        if size == self.size:
            with self._lock:
                if self._free:
                    return self._free.pop()
        # Private: a worker forked later gets its own copy of the pages, never a mapping shared with us.
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)

    def give(self, mapped: mmap.mmap) -> None:
        """Keep ``mapped`` for the next spool, or unmap it when enough are kept."""
        if len(mapped) == self.size:
            with self._lock:
                if len(self._free) < self.keep:
                    self._free.append(mapped)
                    return
        with contextlib.suppress(BufferError):  # a view still held: unmapped when it goes
            mapped.close()

    def clear(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for mapped in free:
            mapped.close()

    def __len__(self) -> int:
        return len(self._free)


MAPPINGS = MappingPool(MEMORY_LIMIT, KEPT_MAPPINGS)
os.register_at_fork(after_in_child=MAPPINGS.clear)  # a forked worker keeps none of its parent's

_VIEWS_LOCK = threading.Lock()
"""Guards every spool's count of views (store threads copy from one spool at once)."""


class Spool:
    """An append-only byte buffer that spills to an unnamed file, then is read by every store."""

    def __init__(
        self,
        directory: Path | None = None,
        memory_limit: int = MEMORY_LIMIT,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._directory = str(directory) if directory else tempfile.gettempdir()
        self._memory_limit = memory_limit
        self._budget = MemoryBudget(memory_limit) if budget is None else budget
        """Shared with the other spools of a server (``Application.spool_budget``); without one, a spool
        is bounded by ``memory_limit`` alone (``mda deliver`` spools one message)."""
        self._reserved = 0
        """Bytes of the budget this spool holds: its size while in memory, 0 once spilled or closed."""
        self._buffer: bytes | bytearray = b""
        """Up to ``SMALL_LIMIT`` bytes: the first write's bytes as given (most messages are one read),
        copied into a ``bytearray`` only when more come."""
        self._mapped: mmap.mmap | None = None
        self._views = 0
        """Views of ``_mapped`` being read (by store threads): while any is, it is not given back."""
        self._fd: int | None = None
        self._size = 0
        self._newlines = 0
        self._head_end: int | None = None
        """Length of the header section once known (its final LF included; 0 when the message starts
        with an empty line), or ``HEADER_SCAN_LIMIT`` when no empty line comes that early."""
        self._last_lf = False
        """Whether the bytes written so far end with LF (an empty line may start in the next write)."""

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

    def write(self, data: bytes | bytearray | memoryview, newlines: int | None = None) -> None:
        """Append bytes; spill to a file once past the memory limit or when the budget is spent.

        ``newlines``: the LF count of ``data`` when the caller has it already (saves a pass over it)."""
        if not data:
            return
        if isinstance(data, memoryview):
            data = data.tobytes()
        if self._head_end is None:
            self._find_head_end(data)
        start = self._size
        end = start + len(data)
        self._size = end
        self._newlines += data.count(b"\n") if newlines is None else newlines
        if self._fd is None and end <= self._memory_limit and self._budget.reserve(len(data)):
            self._reserved += len(data)
            if self._keep(start, end, data):
                return
        if self._fd is None:
            self._spill(start)
        assert self._fd is not None
        write_all(self._fd, data)

    def _keep(self, start: int, end: int, data: bytes | bytearray) -> bool:
        """Store ``data`` in memory; False when no mapping can be had (the caller spills instead)."""
        if self._mapped is not None:
            self._mapped[start:end] = data
        elif end <= SMALL_LIMIT or self._memory_limit <= SMALL_LIMIT:
            if not self._buffer and type(data) is bytes:
                self._buffer = data  # immutable: kept without a copy
            else:
                if type(self._buffer) is bytes:
                    self._buffer = bytearray(self._buffer)
                self._buffer += data
        else:
            try:
                self._mapped = MAPPINGS.take(self._memory_limit)
            except OSError:
                return False
            self._mapped[:start] = self._buffer
            self._mapped[start:end] = data
            self._buffer = b""
        return True

    def _find_head_end(self, data: bytes | bytearray) -> None:
        """Follow the header section across writes without keeping a copy of it."""
        size = self._size
        if data[:1] == b"\n" and (size == 0 or self._last_lf):
            self._head_end = size
            return
        found = data.find(b"\n\n", 0, max(HEADER_SCAN_LIMIT - size, 0))
        if found >= 0:
            self._head_end = size + found + 1
        elif size + len(data) >= HEADER_SCAN_LIMIT:
            self._head_end = HEADER_SCAN_LIMIT
        else:
            self._last_lf = data[-1:] == b"\n"

    def header_section(self) -> bytes:
        """The header section (up to the first empty line), at most ``HEADER_SCAN_LIMIT`` bytes."""
        end = self._size if self._head_end is None else self._head_end
        return self._read(0, min(end, HEADER_SCAN_LIMIT))

    def _read(self, offset: int, count: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, count, offset)
        if self._mapped is not None:
            return self._mapped[offset : offset + count]
        return bytes(self._buffer[offset : offset + count])

    def _spill(self, size: int) -> None:
        fd = _anonymous_file(self._directory)
        try:
            if self._mapped is not None:
                with self._view() as view:
                    write_all(fd, view[:size])
            else:
                write_all(fd, self._buffer)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._drop_memory()

    @contextlib.contextmanager
    def _view(self) -> Iterator[memoryview]:
        """A view of the mapping, counted so that the mapping is not reused while it is read."""
        assert self._mapped is not None
        with _VIEWS_LOCK:
            self._views += 1
        try:
            with memoryview(self._mapped) as view:
                yield view
        finally:
            with _VIEWS_LOCK:
                self._views -= 1

    def _drop_memory(self) -> None:
        """Give the mapping back (kept for the next spool, or unmapped) and the bytes back to the budget.
        A mapping still being read is left to be unmapped when its last view goes."""
        if self._mapped is not None:
            mapped, self._mapped = self._mapped, None
            with _VIEWS_LOCK:
                reading = self._views > 0
            if reading:
                with contextlib.suppress(BufferError):
                    mapped.close()
            else:
                MAPPINGS.give(mapped)
        self._buffer = b""
        if self._reserved:
            self._budget.release(self._reserved)
            self._reserved = 0

    def copy_to(self, fd: int) -> None:
        """Write the whole spool to ``fd`` at its current offset (kernel copy when spilled)."""
        if self._fd is None:
            if self._mapped is not None:
                with self._view() as view:
                    write_all(fd, view[: self._size])
            else:
                write_all(fd, self._buffer)
            return
        self._kernel_copy(self._fd, fd, 0)

    def read_all(self) -> bytes:
        """The whole message; for tools and Sieve, never on the delivery hot path for large messages."""
        return self._read(0, self._size)

    def header_length(self) -> int | None:
        """Bytes of the header section (its last field's line end included), or None when no empty
        line ends it within ``HEADER_SCAN_LIMIT`` bytes while the message is longer."""
        if self._head_end is None:
            return self._size
        return None if self._head_end >= HEADER_SCAN_LIMIT else self._head_end

    def copy_range_to(self, fd: int, start: int) -> None:
        """Write the spool from ``start`` to its end to ``fd`` (kernel copy when spilled)."""
        if self._fd is None:
            write_all(fd, self._read(start, self._size - start))
            return
        self._kernel_copy(self._fd, fd, start)

    def _kernel_copy(self, source: int, fd: int, start: int) -> None:
        """Copy the spilled file from ``start`` to its end into ``fd`` without passing through Python."""
        offset = start
        while offset < self._size:
            count = min(self._size - offset, 1 << 30)
            try:
                sent = os.copy_file_range(source, fd, count, offset)
            except OSError:
                sent = os.sendfile(fd, source, offset, count)
            if sent <= 0:
                raise OSError("short copy from spool")
            offset += sent

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._drop_memory()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpoolTail:
    """The spool from ``start`` on, read as a :class:`Spool` is by the stores: a copy whose header
    section was edited (Sieve editheader) stores its own header in front of this unchanged rest."""

    def __init__(self, spool: Spool, start: int) -> None:
        self.spool = spool
        self.start = start
        self.size = spool.size - start
        self.newlines = spool.newlines - spool._read(0, start).count(b"\n")
        self.in_memory = spool.in_memory

    def copy_to(self, fd: int) -> None:
        self.spool.copy_range_to(fd, self.start)

    def read_all(self) -> bytes:
        return self.spool._read(self.start, self.size)


def write_all(fd: int, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
    """``os.write`` until every byte is written (a write to a file may be short, e.g. on a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _anonymous_file(directory: str) -> int:
    """An unnamed file in ``directory``, created (private) when missing: ``state_dir`` is made on first
    use, and with ``spool_memory`` spent the first spill may come before anything else needs it. Where
    the directory cannot be used the system's temporary directory takes the spool: the mail goes on."""
    try:
        return _unnamed_file(directory)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            return _unnamed_file(directory)
    except OSError:
        pass
    return _unnamed_file(tempfile.gettempdir())


def _unnamed_file(directory: str) -> int:
    """``O_TMPFILE`` needs no cleanup after a crash; else create and unlink at once."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(directory, flags | os.O_TMPFILE, 0o600)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix="mda-spool-", dir=directory)
    os.unlink(name)
    return fd
