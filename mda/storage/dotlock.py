"""Dot-locks: a lock file created with ``O_EXCL`` beside the file it guards.

Used for mbox (``NAME.lock``, mbox(5), Postfix ``dot_lockfile``) and for Dovecot's ``maildirsize.lock``
(the Maildir++ quota file is rebuilt inside its lock and renamed into place). ``O_EXCL`` creation is
atomic on local filesystems and NFSv3+, and works for every program that shares the mailbox.
"""

from __future__ import annotations

import contextlib
import os

LOCK_MODE = 0o600


def create_dotlock(dir_fd: int, name: str, *, stale_seconds: float, now: float) -> int | None:
    """One attempt at the dot-lock ``name`` in ``dir_fd``: a write descriptor on the new lock, or None.

    The lock is a file created with ``O_EXCL`` (atomic on local filesystems and NFSv3+). One that was
    not changed for ``stale_seconds`` belongs to a writer that died (``kill -9`` leaves it behind) and is
    removed first. Two processes may judge the same lock stale at once; the ``O_EXCL`` create after the
    unlink still lets only one of them win (mbox writers in mda also hold the ``fcntl`` lock here).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, LOCK_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if now - seen.st_mtime <= stale_seconds:
            return None
        os.unlink(name, dir_fd=dir_fd)
        return os.open(name, flags, LOCK_MODE, dir_fd=dir_fd)
    except (FileNotFoundError, FileExistsError):
        return None


def remove_dotlock(dir_fd: int, name: str) -> None:
    """Release a dot-lock; one already gone (broken as stale by someone else) is not an error."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
