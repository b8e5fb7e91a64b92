"""Subscribing the folders mda creates, as Dovecot's ``lda_mailbox_autosubscribe`` does for its LDA.

A folder created by ``fileinto :create`` or ``create_folders`` would otherwise exist without showing
in IMAP clients that list subscribed folders only (``LSUB``). Dovecot keeps a Maildir++ user's
subscriptions in ``<Maildir>/subscriptions``; version 2.3 writes a version line ``V<TAB>2``, an empty
line, then one folder per line with the hierarchy levels separated by TAB (names as stored on disk, in
modified UTF-7). A file without the version line is the older format: one name per line with ``.``
between levels.

The file is changed as Dovecot changes it: the new content is written into the dot-lock
``subscriptions.lock`` (created with ``O_EXCL``), which is then renamed over ``subscriptions``, so a
reader sees the old file or the new one, and two writers never interleave.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time

from mda.spool import write_all
from mda.storage.dotlock import create_dotlock, remove_dotlock

FILE_NAME = "subscriptions"
LOCK_NAME = "subscriptions.lock"
VERSION_HEADER = b"V\t2\n\n"
LOCK_WAIT = 2.0
"""Seconds to wait for another writer's lock; then the folder stays unsubscribed (the message is stored)."""
STALE_SECONDS = 120.0
"""A lock unchanged this long was left by a writer that died."""
MAX_FILE = 1 << 20
"""A larger subscriptions file is not rewritten (no user subscribes to a megabyte of folder names)."""


def _escape(level: str) -> bytes:
    """Dovecot's ``str_tabescape``: the characters that would break the line format, escaped with 0x01."""
    text = level.replace("\x01", "\x011").replace("\t", "\x01t").replace("\r", "\x01r").replace("\n", "\x01n")
    return text.encode("utf-8", "surrogateescape")


def entry(folder: str, versioned: bool) -> bytes:
    """The line of ``folder`` (Maildir++ name without the leading dot, levels separated by ``.``)."""
    if not versioned:
        return folder.encode("utf-8", "surrogateescape") + b"\n"
    return b"\t".join(_escape(level) for level in folder.split(".")) + b"\n"


def _read(dir_fd: int) -> bytes | None:
    """The current file, None when there is none; anything but a regular file is refused."""
    try:
        fd = os.open(FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
            raise OSError(f"{FILE_NAME} is not a regular file of at most {MAX_FILE} bytes")
        return os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)


def subscribe(maildir_fd: int, folder: str, owner: tuple[int, int] | None, *, fsync: bool = True) -> bool:
    """Add ``folder`` to the Maildir's subscriptions; False when another writer held the lock too long.

    Raises ``OSError`` when the file cannot be read or replaced (the caller decides what that costs).
    """
    deadline = time.monotonic() + LOCK_WAIT
    while (lock := create_dotlock(maildir_fd, LOCK_NAME, stale_seconds=STALE_SECONDS, now=time.time())) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # a dot-lock has no release event to wait on (see mda/storage/mbox.py, _POLL_MAX)
    renamed = False
    try:
        current = _read(maildir_fd)
        versioned = current is None or current.startswith(VERSION_HEADER)
        line = entry(folder, versioned)
        if current is None:
            current = VERSION_HEADER
        if line.rstrip(b"\n") in current.splitlines():
            return True
        if current and not current.endswith(b"\n"):
            current += b"\n"
        write_all(lock, current + line)
        if owner is not None:
            os.fchown(lock, *owner)
        if fsync:
            os.fsync(lock)
        os.rename(LOCK_NAME, FILE_NAME, src_dir_fd=maildir_fd, dst_dir_fd=maildir_fd)
        renamed = True
        return True
    finally:
        os.close(lock)
        if not renamed:
            with contextlib.suppress(OSError):
                remove_dotlock(maildir_fd, LOCK_NAME)
