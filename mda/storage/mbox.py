"""mbox delivery: lock (``fcntl``, then dot-lock), append one mboxrd message, ``fsync``, unlock.

The lock order is the one Postfix (``mailbox_delivery_lock = fcntl, dotlock``) and Dovecot
(``mbox_write_locks``) use on Linux, so mda, the IMAP server and a local MUA never write at once. An
append that fails half-way is cut off with ``ftruncate`` back to the size before it (Postfix
``global/mail_copy.c``): an mbox never holds a partial message. The ``fcntl`` lock is an open-file-
description lock (``F_OFD_SETLK``): it conflicts with the classic POSIX locks that Dovecot and Postfix
take, and, unlike them, also between two threads of this process and it is not dropped when another
descriptor of the same file is closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mda.replies import LOCAL_ERROR, MAILBOX_BUSY, DeliveryError
from mda.spool import Spool, SpoolTail, write_all
from mda.storage.base import Mailbox, MessageCopy, StoreResult
from mda.storage.dotlock import create_dotlock, remove_dotlock
from mda.storage.fsutil import split_below
from mda.storage.quota import check_mbox_quota
from mda.storage.userfs import open_below_mailbox_root

DOTLOCK_SUFFIX = ".lock"
DOTLOCK_STALE_SECONDS = 500.0
"""A dot-lock older than this is left by a dead writer and is removed (Postfix ``stale_lock_time``)."""
FILE_MODE = 0o600
NULL_SENDER = "MAILER-DAEMON"
"""The ``From `` line's sender for the null reverse-path ``<>`` (mbox(5), Postfix, Dovecot)."""
CHUNK = 1 << 16
_POLL_FIRST = 0.01
_POLL_MAX = 0.2
"""Backing-off retries while another program holds the dot-lock. Polled on purpose: a dot-lock is a
file another process (Dovecot, a mail reader) removes, with no event to wait on that also works on NFS,
where mbox locking is meant to work; Postfix local(8) and procmail retry the same way."""


def from_line(sender: str, when: float) -> bytes:
    """``From SENDER DATE`` with DATE in ``asctime`` format (mbox(5)); the sender never splits the line.

    Whitespace and control characters (a quoted local part may hold them) become ``_`` so that readers
    that split the line on spaces still find the date.
    """
    cleaned = "".join("_" if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F else char for char in sender)
    return f"From {cleaned or NULL_SENDER} {time.asctime(time.localtime(when))}\n".encode()


_FROM_LINE = re.compile(rb"^(?=>*From )", re.MULTILINE)
_FROM = b"From "


class MboxrdQuoter:
    """Streaming mboxrd quoting: every line matching ``^>*From `` gets one more ``>``.

    mboxrd (qmail's mbox(5)) is reversible, unlike mboxo which quotes only ``From ``. The input comes in
    chunks of any size; a line start that cannot be decided yet (``>>Fr`` at a chunk's end) is held back
    until the next chunk, so memory stays bounded by the chunk size.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._at_line_start = True

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        self._pending = b""
        head = b""
        if not self._at_line_start:
            newline = data.find(b"\n")
            if newline < 0:
                return data
            head, data = data[: newline + 1], data[newline + 1 :]
        last = data.rfind(b"\n")
        complete, tail = data[: last + 1], data[last + 1 :]
        quoted = head + _FROM_LINE.sub(b">", complete)
        unquoted_start = tail.lstrip(b">")
        self._at_line_start = False
        if unquoted_start.startswith(_FROM):
            tail = b">" + tail
        elif _FROM.startswith(unquoted_start):
            self._pending, tail = tail, b""
            self._at_line_start = True
        return quoted + tail

    def finish(self) -> bytes:
        """What is still held back: an unfinished line that turned out not to be a ``From `` line."""
        rest, self._pending, self._at_line_start = self._pending, b"", True
        return rest


def _chunks(body: Spool | SpoolTail) -> Iterator[bytes]:
    """The spooled body in chunks; a spilled body is read through a private temporary copy."""
    if body.in_memory:
        data = body.read_all()
        for offset in range(0, len(data), CHUNK):
            yield data[offset : offset + CHUNK]
        return
    with tempfile.TemporaryFile() as copy:
        body.copy_to(copy.fileno())
        offset = 0
        while chunk := os.pread(copy.fileno(), CHUNK, offset):
            offset += len(chunk)
            yield chunk


def _lock_ofd(fd: int) -> bool:
    """Try once for an exclusive whole-file OFD lock; ``struct flock`` is type, whence, start, len, pid."""
    request = struct.pack("@hhqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@dataclass
class _StagedMboxAppend:
    """An appended, fsync'd message still under both locks; commit unlocks, abort truncates back."""

    dir_fd: int
    fd: int
    lock_name: str
    original_size: int
    location: Path
    fsync: bool
    size: int
    write_seconds: float
    fsync_seconds: float
    done: bool = False

    def commit(self) -> StoreResult:
        # The message is durable once stage returned: releasing the locks cannot lose it.
        self._release()
        return StoreResult(
            location=str(self.location),
            size=self.size,
            write_seconds=self.write_seconds,
            fsync_seconds=self.fsync_seconds,
        )

    def abort(self) -> None:
        if self.done:
            return
        try:
            os.ftruncate(self.fd, self.original_size)
            if self.fsync:
                os.fsync(self.fd)
        except OSError:
            pass
        self._release()

    def _release(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            remove_dotlock(self.dir_fd, self.lock_name)
        for fd in (self.fd, self.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class MboxStore:
    """Appends copies to mbox files; see ``storage.base`` for the contract.

    ``clock`` gives the ``From `` line date and judges dot-lock age; ``stale_lock_seconds`` is injectable
    so that tests can show a dead writer's lock being broken without waiting minutes.
    """

    def __init__(
        self,
        *,
        stale_lock_seconds: float = DOTLOCK_STALE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stale_lock_seconds = stale_lock_seconds
        self._clock = clock

    def stage(self, mailbox: Mailbox, message: MessageCopy) -> _StagedMboxAppend:
        dir_fd, name = self._open_directory(mailbox)
        try:
            fd, lock_name = self._open_locked(mailbox, dir_fd, name)
        except BaseException:
            os.close(dir_fd)
            raise
        staged = _StagedMboxAppend(
            dir_fd=dir_fd,
            fd=fd,
            lock_name=lock_name,
            original_size=os.fstat(fd).st_size,
            location=mailbox.path,
            fsync=mailbox.fsync,
            size=0,
            write_seconds=0.0,
            fsync_seconds=0.0,
        )
        try:
            check_mbox_quota(mailbox, staged.original_size, message.size)
            self._append(staged, message)
        except BaseException:
            staged.abort()
            raise
        return staged

    @staticmethod
    def _open_directory(mailbox: Mailbox) -> tuple[int, str]:
        """The mbox's directory (created below the fixed root when missing) and the file's name."""
        root = mailbox.root or mailbox.path.parent
        parts = split_below(root, mailbox.path)
        if not parts:
            raise DeliveryError(LOCAL_ERROR, f"mbox path {mailbox.path} names its root directory")
        return open_below_mailbox_root(mailbox, parts[:-1]), parts[-1]

    def _open_locked(self, mailbox: Mailbox, dir_fd: int, name: str) -> tuple[int, str]:
        """Open the mbox and take the ``fcntl`` lock, then the dot-lock, by ``lock_timeout`` or 450 4.2.0.

        After locking, the name must still lead to the locked file: a writer that replaced the mbox
        (rename over it) while we waited would otherwise leave us appending to an unlinked inode.
        """
        deadline = time.monotonic() + mailbox.lock_timeout
        lock_name = name + DOTLOCK_SUFFIX
        delay = _POLL_FIRST
        while True:
            fd = self._open_file(mailbox, dir_fd, name)
            try:
                if _lock_ofd(fd):
                    lock_fd = create_dotlock(
                        dir_fd, lock_name, stale_seconds=self._stale_lock_seconds, now=self._clock()
                    )
                    if lock_fd is not None:
                        os.close(lock_fd)
                        if self._still_named(fd, dir_fd, name):
                            return fd, lock_name
                        remove_dotlock(dir_fd, lock_name)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(MAILBOX_BUSY, f"mbox {mailbox.path} still locked after {mailbox.lock_timeout}s")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    @staticmethod
    def _open_file(mailbox: Mailbox, dir_fd: int, name: str) -> int:
        """Open (or create) the mbox: no symlink, no FIFO or device, no hard link to someone else's file.

        ``O_NONBLOCK`` keeps a planted FIFO from hanging the open; the hard-link check is Postfix's
        ``safe_open`` rule.
        """
        flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
        created = True
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=dir_fd)
        except FileExistsError:
            created = False
            fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DeliveryError(LOCAL_ERROR, f"mbox {mailbox.path} is not a regular file")
            if info.st_nlink != 1:
                raise DeliveryError(LOCAL_ERROR, f"mbox {mailbox.path} has {info.st_nlink} links")
            if created:
                if mailbox.owner is not None:
                    os.fchown(fd, *mailbox.owner)
                os.fsync(dir_fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _still_named(fd: int, dir_fd: int, name: str) -> bool:
        try:
            named = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def _append(self, staged: _StagedMboxAppend, message: MessageCopy) -> None:
        """Write ``From `` line, quoted message, a final newline if missing, and the empty line."""
        started = time.perf_counter()
        buffer = bytearray()
        if staged.original_size and os.pread(staged.fd, 1, staged.original_size - 1) != b"\n":
            buffer += b"\n"  # the previous message lacks its final newline: start ours on a line of its own
        buffer += from_line(message.envelope_sender, self._clock())
        quoter = MboxrdQuoter()
        last = b"\n"
        for chunk in _pieces(message):
            buffer += quoter.feed(chunk)
            if len(buffer) >= CHUNK:
                last = self._flush(staged, buffer, last)
        buffer += quoter.finish()
        last = self._flush(staged, buffer, last)
        buffer += b"\n" if last == b"\n" else b"\n\n"
        self._flush(staged, buffer, last)
        written = time.perf_counter()
        if staged.fsync:
            os.fsync(staged.fd)
        staged.write_seconds = written - started
        staged.fsync_seconds = time.perf_counter() - written

    @staticmethod
    def _flush(staged: _StagedMboxAppend, buffer: bytearray, last: bytes) -> bytes:
        """Write and empty ``buffer``; returns the last byte written so far (for the final newline)."""
        if not buffer:
            return last
        write_all(staged.fd, buffer)
        staged.size += len(buffer)
        last = bytes(buffer[-1:])
        buffer.clear()
        return last


def _pieces(message: MessageCopy) -> Iterator[bytes]:
    yield message.header
    yield from _chunks(message.body)
