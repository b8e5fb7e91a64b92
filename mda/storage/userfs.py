"""Files in a system user's home, handled with that user's authority and never trusted as root.

A ``passwd`` user owns their home and everything in it: they can replace ``~/Maildir/maildirsize`` or
their Sieve script by a FIFO, a device, a symlink leading anywhere or a hard link to a file of root's.
mda therefore works there as Postfix local(8) and Pigeonhole do, with the user's identity, and checks
what it opened (README, "Local users"):

- ``fs_identity`` switches the calling thread's file-system uid and gid (Linux ``setfsuid(2)`` and
  ``setfsgid(2)``) for the duration of a block. These are per-thread credentials in the kernel and
  glibc's wrappers are plain system calls (unlike ``seteuid``, which glibc applies to every thread),
  so the event loop and the other storage threads keep their own identity.
- ``open_user_file`` opens with ``O_NONBLOCK`` (a FIFO cannot hang the open) and accepts only a regular
  file with one link, owned by the user, within a size limit; ``open_beneath_home`` resolves a path
  with symlinks allowed only while they stay inside the home.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from mda.storage.base import Mailbox
from mda.storage.dircache import DirectoryCache
from mda.storage.fsutil import DIR_FLAGS, is_below, open_below, open_file_beneath, open_root

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class UnsafeUserFile(OSError):
    """A file in a user's home that mda refuses to use (not regular, linked, foreign, too large, outside)."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {why}")
        self.why = why


def _set_fs_ids(uid: int, gid: int) -> None:
    """Set this thread's fsgid, then fsuid; verified, since the calls report no error themselves."""
    assert _libc is not None
    _libc.setfsgid(ctypes.c_uint(gid))
    _libc.setfsuid(ctypes.c_uint(uid))
    if current_fs_ids() != (uid, gid):
        raise PermissionError(errno.EPERM, f"cannot take file-system identity {uid}:{gid}")


def current_fs_ids() -> tuple[int, int]:
    """This thread's (fsuid, fsgid): an invalid id (-1) changes nothing and returns the current one."""
    if _libc is None:
        return os.geteuid(), os.getegid()
    uid = int(_libc.setfsuid(ctypes.c_uint(0xFFFFFFFF)))
    gid = int(_libc.setfsgid(ctypes.c_uint(0xFFFFFFFF)))
    return uid, gid


@contextlib.contextmanager
def fs_identity(user: tuple[int, int] | None) -> Iterator[None]:
    """Run the block with ``user``'s (uid, gid) as this thread's file-system identity.

    Does nothing for None, without root, or outside Linux (then no other identity can be taken and
    the file checks below are the only guard). Files created inside belong to the user, and the
    kernel checks permissions as for the user: root's ``CAP_DAC_OVERRIDE`` and ``CAP_CHOWN`` are off
    for this thread while the fsuid is not 0.
    """
    if user is None or _libc is None or os.geteuid() != 0:
        yield
        return
    previous = current_fs_ids()
    _set_fs_ids(*user)
    try:
        yield
    finally:
        _set_fs_ids(*previous)


def open_home(home: Path, uid: int | None) -> int:
    """The user's home directory, which must exist and belong to ``uid`` (any owner for None, a
    virtual user's home): mda never creates a home.

    The home comes from the passwd database or the configuration (trusted, it may be a symlink such as
    ``/home``). Raises ``FileNotFoundError`` or ``UnsafeUserFile``.
    """
    fd = os.open(home, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        _check_home_owner(os.fstat(fd), home, uid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_home(home: Path, uid: int) -> None:
    """What ``open_home`` checks, in one ``stat``: for a delivery into a Maildir whose descriptors are
    still open from a delivery a moment ago (``mda.storage.dircache``), so the home's owner is checked
    for every delivery all the same."""
    info = os.stat(home)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(home))
    _check_home_owner(info, home, uid)


def _check_home_owner(info: os.stat_result, home: Path, uid: int | None) -> None:
    if uid is not None and info.st_uid != uid:
        raise UnsafeUserFile(home, f"home directory not owned by uid {uid}")


_roots: DirectoryCache[tuple[Path, tuple[int, int] | None]] = DirectoryCache()
"""Open mail roots (the operator's ``/var/vmail``), by path and owner of what is created there."""


def open_below_mailbox_root(mailbox: Mailbox, parts: list[str]) -> int:
    """The directory ``parts`` below the mailbox's fixed root, created (with the root) when missing; a
    system user's home is never created and must be theirs.

    A root other than a home stays open for ``dircache.LIFETIME`` and serves the deliveries of that
    time; should it be gone (``ENOENT`` below it), it is opened again once.
    """
    root = mailbox.root or mailbox.path.parent
    if mailbox.system_user is not None:
        home_fd = open_home(root, mailbox.system_user[0])
        try:
            return open_below(home_fd, parts, create=True, owner=mailbox.owner)
        finally:
            os.close(home_fd)
    key = (root, mailbox.owner)
    entry = _roots.lease(key)
    if entry is not None:
        try:
            return open_below(entry.fds["root"], parts, create=True, owner=mailbox.owner)
        except FileNotFoundError:
            _roots.discard(key, entry)
        finally:
            _roots.release(entry)
    entry = _roots.insert(key, {"root": open_root(root, create=True, owner=mailbox.owner)}, root)
    try:
        return open_below(entry.fds["root"], parts, create=True, owner=mailbox.owner)
    finally:
        _roots.release(entry)


def check_user_file(fd: int, name: Path | str, uid: int | None, max_size: int | None) -> os.stat_result:
    """Refuse anything but a regular file with one link (owned by ``uid``, at most ``max_size`` bytes).

    One link: with ``fs.protected_hardlinks=0`` a user can hard-link a file of root's into their home.
    """
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeUserFile(name, "not a regular file")
    if info.st_nlink != 1:
        raise UnsafeUserFile(name, f"{info.st_nlink} hard links")
    if uid is not None and info.st_uid != uid:
        raise UnsafeUserFile(name, f"owned by uid {info.st_uid}, not {uid}")
    if max_size is not None and info.st_size > max_size:
        raise UnsafeUserFile(name, f"larger than {max_size} bytes")
    return info


def open_user_file(
    dir_fd: int, name: str, flags: int, *, uid: int | None, max_size: int | None = None, label: Path | str = ""
) -> int:
    """Open ``name`` in ``dir_fd`` without following a symlink or waiting on a FIFO, then check it."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    _checked(fd, label or name, uid, max_size)
    return fd


def _checked(fd: int, name: Path | str, uid: int | None, max_size: int | None) -> os.stat_result:
    """:func:`check_user_file`, closing ``fd`` when it refuses."""
    try:
        return check_user_file(fd, name, uid, max_size)
    except BaseException:
        os.close(fd)
        raise


def open_beneath_home(home: Path, path: Path, uid: int | None, *, max_size: int) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading when it leads to a checked file inside ``home`` (owned by ``uid``,
    unless None): the descriptor and its ``fstat``, which the caller needs not take again.

    Symlinks are followed while they stay inside the home (Dovecot's ``~/.dovecot.sieve`` ->
    ``sieve/x.sieve``); the resolved path is then opened again one component at a time with no symlink
    at all, so a link swapped in meanwhile fails instead of leading out. Raises ``FileNotFoundError``
    when there is no file, ``UnsafeUserFile`` when it leads out of the home or is not a checked file.

    Where the kernel has openat2(2), one call resolved beneath the home descriptor does all of that
    (it is run for every delivery of a user with a Sieve script); the walk below, which resolves the
    whole path in user space, is for what that call does not open.
    """
    home_fd = open_home(home, uid)
    try:
        text, top = os.fspath(path), os.fspath(home)
        if is_below(text, top):
            fd = open_file_beneath(home_fd, text[len(top) :].lstrip("/"))
            if fd is not None:
                return fd, _checked(fd, path, uid, max_size)
        real_home = Path(os.path.realpath(home))
        target = Path(os.path.realpath(path))
        if target == real_home or real_home not in target.parents:
            if not os.path.lexists(path):
                raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
            raise UnsafeUserFile(path, f"leads out of the home directory {home}")
        parts = target.relative_to(real_home).parts
        try:
            dir_fd = open_below(home_fd, list(parts[:-1]), create=False, owner=None)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeUserFile(path, "a directory on the way is a symlink") from None
            raise
        try:
            fd = os.open(
                parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafeUserFile(path, "became a symlink") from None
            raise
        finally:
            os.close(dir_fd)
        return fd, _checked(fd, path, uid, max_size)
    finally:
        os.close(home_fd)
