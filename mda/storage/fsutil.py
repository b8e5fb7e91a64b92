"""Directory walking that no symlink or path trick can lead astray, and durable directory creation.

Every directory below a mailbox's fixed root is opened relative to its parent's descriptor with
``O_NOFOLLOW``, so a symlink planted in a mailbox path (by a local user, or by a shared-storage
neighbour) is refused instead of followed (docs/architecture.md, "Privileges"). A directory mda creates is durable
only once its parent is ``fsync``ed (fsync(2)), which ``open_path`` does before returning.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PRIVATE_DIR_MODE = 0o700


def open_root(root: Path, *, create: bool, owner: tuple[int, int] | None) -> int:
    """Open (and create if asked) the configured root of a mailbox path; it comes from the operator."""
    try:
        return os.open(root, DIR_FLAGS)
    except FileNotFoundError:
        if not create:
            raise
    created = _makedirs_durably(root, owner)
    fd = os.open(root, DIR_FLAGS)
    if created:
        os.fsync(fd)
    return fd


def _makedirs_durably(path: Path, owner: tuple[int, int] | None) -> bool:
    """``mkdir -p`` that fsyncs each parent after creating a child."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        if owner is not None:
            os.chown(directory, *owner, follow_symlinks=False)
        parent_fd = os.open(directory.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            os.fsync(parent_fd)
        finally:
            os.close(parent_fd)
    return bool(missing)


def open_below(
    root_fd: int,
    parts: Sequence[str],
    *,
    create: bool,
    owner: tuple[int, int] | None,
    mode: int = PRIVATE_DIR_MODE,
) -> int:
    """Open the directory ``root/parts...`` one component at a time, never following a symlink.

    Missing components are created (when ``create``) with ``mode`` and ``owner``, and the parent of
    each new directory is ``fsync``ed before going on, so the new entry survives a crash.
    Returns a new descriptor; the caller closes it. ``root_fd`` stays open.
    """
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\0" in part:
            raise OSError(errno.EINVAL, f"unsafe path component {part!r}")
    if parts:
        fd = _open_beneath(root_fd, "/".join(parts))
        if fd is not None:
            return fd
    current = os.dup(root_fd)
    try:
        for part in parts:
            try:
                next_fd = os.open(part, DIR_FLAGS, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=current)
                except FileExistsError:
                    pass
                else:
                    if owner is not None:
                        os.chown(part, *owner, dir_fd=current, follow_symlinks=False)
                    os.fsync(current)
                next_fd = os.open(part, DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = next_fd
        return current
    except BaseException:
        os.close(current)
        raise


class _OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437
"""The same number on every Linux architecture (it came after the tables were unified)."""
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_BENEATH = _OpenHow(DIR_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
_FILE_BENEATH = _OpenHow(
    os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS
)
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_syscall = _libc.syscall if _libc is not None else None
if _syscall is not None:
    _syscall.restype = ctypes.c_long
_openat2_works = _syscall is not None


def _openat2(dir_fd: int, path: str, how: _OpenHow) -> int:
    """openat2(2): the new descriptor, or the negated errno. A kernel without openat2 (before 5.6) or
    a seccomp filter refusing it turns it off for the process (``-ENOSYS`` from then on)."""
    global _openat2_works
    if not _openat2_works or _syscall is None:
        return -errno.ENOSYS
    fd = int(
        _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd >= 0:
        return fd
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
        _openat2_works = False
    return -error


def _open_beneath(dir_fd: int, path: str) -> int | None:
    """Open the existing directory ``path`` below ``dir_fd`` in one openat2(2), refusing any symlink
    and any escape from ``dir_fd``; None when that does not succeed.

    It is the walk of ``open_below`` in one system call instead of two or three per component (each
    of which lets the interpreter change threads). On any failure the caller walks, which creates what
    is missing and raises the precise error.
    """
    fd = _openat2(dir_fd, path, _BENEATH)
    return fd if fd >= 0 else None


def open_file_beneath(dir_fd: int, path: str) -> int | None:
    """Open ``path`` below ``dir_fd`` for reading (``O_NONBLOCK``: a FIFO cannot hang) in one openat2(2)
    that follows symlinks only while they stay below ``dir_fd`` (``RESOLVE_BENEATH``; an absolute
    symlink counts as leaving). Raises ``FileNotFoundError`` when resolution stayed below and found
    nothing; None on any other failure, for the caller's component-by-component walk, which
    raises the precise error (or accepts what the kernel refused to resolve, such as an absolute
    symlink that leads back inside)."""
    fd = _openat2(dir_fd, path, _FILE_BENEATH)
    if fd >= 0:
        return fd
    if fd == -errno.ENOENT:
        raise FileNotFoundError(errno.ENOENT, "no such file", path)
    return None


def is_below(path: str | Path, root: str | Path) -> bool:
    """``root in Path(path).parents`` for absolute paths as ``Path`` normalizes them, compared as text
    (a fraction of the cost: mailbox and Sieve paths are checked for every recipient)."""
    text, top = os.fspath(path), os.fspath(root)
    return text != top and text.startswith(top if top.endswith("/") else top + "/")


def split_below(root: Path, path: Path) -> list[str]:
    """The components of ``path`` below ``root``; refuses a path that is not inside ``root``."""
    relative = path.relative_to(root)
    parts = list(relative.parts)
    if any(part in ("..", ".") for part in parts):
        raise OSError(errno.EINVAL, f"path {path} escapes {root}")
    return parts


class _DirectorySync:
    """Group commit for one directory: one ``fsync`` covers every link made before it started.

    A committer takes a ticket after its link; if an ``fsync`` that started after its ticket completes,
    its entry is durable and it returns without a system call of its own. Nobody waits for others to
    arrive (no timer): when no ``fsync`` is running, the caller runs one at once, covering every ticket
    issued so far (docs/architecture.md, "Durability contract").
    """

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.issued = 0
        self.durable = 0
        self.running = False

    def sync(self, fd: int) -> None:
        with self.condition:
            self.issued += 1
            ticket = self.issued
            while self.durable < ticket and self.running:
                self.condition.wait()
            if self.durable >= ticket:
                return
            self.running = True
            covers = self.issued
        synced = False
        try:
            os.fsync(fd)
            synced = True
        finally:
            with self.condition:
                self.running = False
                if synced:
                    self.durable = max(self.durable, covers)
                self.condition.notify_all()


_directory_syncs: dict[str, _DirectorySync] = {}
_directory_syncs_lock = threading.Lock()
MAX_TRACKED_DIRECTORIES = 10_000


def fsync_directory_shared(fd: int, key: str) -> None:
    """``fsync`` the directory open at ``fd`` (named ``key``), sharing the call with concurrent committers."""
    with _directory_syncs_lock:
        state = _directory_syncs.get(key)
        if state is None:
            if len(_directory_syncs) >= MAX_TRACKED_DIRECTORIES:
                _directory_syncs.clear()
            state = _directory_syncs[key] = _DirectorySync()
    state.sync(fd)
