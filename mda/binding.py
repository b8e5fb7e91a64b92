"""Listening sockets, opened so that nobody can redirect them, and the identity mda runs under.

TCP: a port is served by one process only. mda never sets ``SO_REUSEPORT``: with several workers the
supervisor binds each listener once and the workers inherit the descriptor across ``fork``, so a second
instance started by mistake on the same port fails (``EADDRINUSE``) instead of silently taking half of
the traffic.

UNIX: the socket file is created, given its mode and owner in a private directory (mode 0700, created
by mda inside the socket's directory), then renamed into place. Every step goes through directory
descriptors, so no symlink or rename in the socket's directory can make a privileged ``chmod``/``chown``
act on another file; and the directory itself must be writable by nobody but root, the service user and
the socket's owner. (The mode is not set through the umask: the umask belongs to the whole process, and
a listener added by a reload is bound while storage threads create mailboxes.) A lock file next to the
socket (opened with ``O_NOFOLLOW``) tells a live owner from a stale file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import secrets
import socket
import stat
from pathlib import Path

from mda.config import BindAddress, Config
from mda.identity import Identity, resolve_identity

__all__ = [
    "BACKLOG",
    "AddressInUse",
    "Identity",
    "SocketInUse",
    "UnsafeSocketPath",
    "bind_tcp",
    "bind_unix",
    "drop_privileges",
    "resolve_identity",
    "service_identity",
]

BACKLOG = 1024


class AddressInUse(OSError):
    """Another process (another mda, or anything else) already listens on this address."""


class SocketInUse(OSError):
    """Another running mda holds the lock of this UNIX socket path."""


class UnsafeSocketPath(OSError):
    """The socket's directory or lock file could let another user redirect what root creates."""


def service_identity(config: Config) -> Identity | None:
    """The user mda runs as after binding (``user:``), resolved once before anything is bound."""
    return resolve_identity(config.user) if config.user else None


def drop_privileges(identity: Identity | None) -> None:
    """Become ``identity`` for good (real, effective and saved ids); only meaningful when root.

    The user's supplementary groups are kept (``initgroups``): membership of a group such as Debian's
    ``ssl-cert`` is how a service user is given read access to a private key.
    """
    if identity is None or os.geteuid() != 0:
        return
    os.initgroups(identity.name, identity.gid)
    os.setgid(identity.gid)
    os.setuid(identity.uid)


# --- TCP -----------------------------------------------------------------------------------------


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket that no other process shares (no ``SO_REUSEPORT``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only lets a restart bind while old connections sit in TIME_WAIT; on Linux it
        # never lets two sockets listen on one address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                text = f"address {BindAddress(host, port)} is already served by another process"
                raise AddressInUse(text) from None
            raise
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# --- UNIX ----------------------------------------------------------------------------------------


def check_directory(fd: int, path: str, allowed: set[int]) -> None:
    """Refuse a directory that a user other than those in ``allowed`` (uids) could write into."""
    info = os.fstat(fd)
    problem = ""
    if info.st_mode & stat.S_IWOTH:
        problem = "is writable by every user"
    elif info.st_uid not in allowed:
        problem = f"is owned by uid {info.st_uid}"
    elif info.st_mode & stat.S_IWGRP and not _group_only_of(info.st_gid, allowed):
        problem = f"is writable by group {_group_name(info.st_gid)}"
    if problem:
        raise UnsafeSocketPath(
            f"socket directory {path} {problem}: another user could replace the socket or its lock; "
            "use a directory only root and the service user can write (e.g. /run/mda, mode 0755)",
        )


def _group_only_of(gid: int, allowed: set[int]) -> bool:
    """True when every member of group ``gid`` is an allowed user (primary or listed)."""
    if gid == 0:
        return True
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    primary = {entry.pw_name for entry in pwd.getpwall() if entry.pw_gid == gid}
    names = set()
    for uid in allowed:
        with contextlib.suppress(KeyError):
            names.add(pwd.getpwuid(uid).pw_name)
    return (members | primary) <= names


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _open_lock(name: str, directory_fd: int, path: str) -> int:
    """The lock file next to the socket, never through a symlink and never anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=directory_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeSocketPath(f"lock file {path} is a symbolic link: refusing to follow it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeSocketPath(f"lock file {path} is not a regular file")
    return fd


def bind_unix(
    path: str, mode: int | None, owner: Identity | None, service: Identity | None = None
) -> tuple[socket.socket, int]:
    """A listening UNIX socket at ``path`` with ``mode`` and ``owner``, guarded by an ``flock``ed lock.

    Binding over an existing path would silently take the socket from a running instance; the lock
    tells a live owner from a stale file left by a crash, and the kernel releases it when the process
    dies, so ``kill -9`` never blocks the restart. ``service`` is the user mda will run as: it, root and
    the socket's ``owner`` may own or write the directory. Returns the socket and the lock file
    descriptor (kept open as long as the socket lives).
    """
    socket_path = Path(path)
    name = socket_path.name
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    directory_fd = os.open(socket_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # The socket's own owner is trusted with the socket already (Postfix's private/ directory).
        allowed = {0, os.geteuid(), *(who.uid for who in (service, owner) if who is not None)}
        check_directory(directory_fd, str(socket_path.parent), allowed)
        lock_fd = _open_lock(f"{name}.lock", directory_fd, f"{path}.lock")
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SocketInUse(f"{path} is in use by another running mda") from None
            sock = _bind_in_place(name, directory_fd, path, mode, owner)
        except BaseException:
            os.close(lock_fd)
            raise
    finally:
        os.close(directory_fd)
    return sock, lock_fd


def _bind_in_place(name: str, directory_fd: int, path: str, mode: int | None, owner: Identity | None) -> socket.socket:
    """Bind in a private directory, set mode and owner there, then rename over ``name``."""
    with contextlib.suppress(FileNotFoundError):
        existing = os.lstat(name, dir_fd=directory_fd)
        if not (stat.S_ISSOCK(existing.st_mode) or stat.S_ISLNK(existing.st_mode)):
            raise UnsafeSocketPath(f"{path} exists and is not a socket: refusing to replace it")
    private = f".{name}.{secrets.token_hex(6)}"
    os.mkdir(private, 0o700, dir_fd=directory_fd)
    try:
        private_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
        try:
            info = os.fstat(private_fd)
            if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
                raise UnsafeSocketPath(f"private directory for {path} was replaced")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                # /proc/self/fd/N names the private directory itself, whatever happens to its name.
                sock.bind(f"/proc/self/fd/{private_fd}/{name}")
                # Only this process can write in the private directory: these act on the new socket.
                if mode is not None:
                    os.chmod(name, mode, dir_fd=private_fd)
                if owner is not None:
                    os.chown(name, owner.uid, owner.gid, dir_fd=private_fd, follow_symlinks=False)
                os.rename(name, name, src_dir_fd=private_fd, dst_dir_fd=directory_fd)
                sock.listen(BACKLOG)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=private_fd)
                raise
        finally:
            os.close(private_fd)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(private, dir_fd=directory_fd)
    return sock
