"""Maildir delivery: unique file in ``tmp/``, fsync, link into ``new/`` (never replacing), fsync ``new/``.

Names follow Dovecot and Courier, ``SECONDS.M<USEC>P<PID>Q<COUNTER>.HOST,S=<size>,W=<vsize>``, so IMAP
servers learn sizes without reading the file (Dovecot's ``S=``/``W=``). ``link`` + ``unlink`` is used
instead of ``rename`` because ``rename`` silently replaces an existing name, which on shared storage can
lose a message; the Postfix ``local/maildir.c`` pattern.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mda.spool import write_all
from mda.storage.base import Mailbox, MessageCopy, StoreResult
from mda.storage.dircache import CachedDirectories, DirectoryCache
from mda.storage.folders import count_folders
from mda.storage.fsutil import fsync_directory_shared, open_below, split_below
from mda.storage.quota import MaildirCharge, charge_maildir
from mda.storage.subscriptions import subscribe
from mda.storage.userfs import check_home, open_below_mailbox_root

STALE_TMP_SECONDS = 36 * 3600
"""qmail's maildir(5): files in tmp/ older than 36 hours are left-overs of a crash."""
STALE_SCAN_INTERVAL = 3600.0
FILE_MODE = 0o600
SUBDIRS = ("tmp", "new", "cur")

_counter = itertools.count(1)
_last_stale_scan: dict[str, float] = {}
_stale_lock = threading.Lock()


def _host_part() -> str:
    """The host name as Maildir names write it: ``/`` as ``\\057`` and ``:`` as ``\\072``."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


_HOST = _host_part()


def unique_name(size: int, vsize: int) -> str:
    now = time.time()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size},W={vsize}"


@dataclass
class _StagedMaildirFile:
    """A fully written, fsync'd file in ``tmp/`` waiting to be linked into ``new/`` or ``cur/``."""

    mailbox: Mailbox
    directories: CachedDirectories
    """The Maildir's (or folder's) descriptors, leased from the cache until commit or abort is done."""
    tmp_fd: int
    anonymous_fd: int | None
    """An ``O_TMPFILE`` file, still open: it gets its only name at commit, so a crash leaves nothing in
    ``tmp/``. None when the filesystem cannot make one; then ``name`` exists in ``tmp/``."""
    name: str
    target: str
    flags: str
    size: int
    write_seconds: float
    fsync_seconds: float
    charge: MaildirCharge
    """Quota usage delta, appended to ``maildirsize`` once the message is in ``new/``."""
    removed: CachedDirectories | None = None
    """The directories the copy was staged in, when they were found removed at commit: still leased,
    since ``tmp_fd`` is theirs."""
    done: bool = False

    def commit(self) -> StoreResult:
        fsync_seconds = self.fsync_seconds
        try:
            try:
                target_fd, final = self._link()
            except OSError as error:
                if not _removed(self.directories, error):
                    raise
                # The Maildir was removed since its descriptors were opened: once more at its path.
                _maildirs.discard(_cache_key(self.mailbox), self.directories)
                self.removed, self.directories = self.directories, _open_fresh(self.mailbox, None)[0]
                target_fd, final = self._link()
            if self.anonymous_fd is None:
                os.unlink(self.name, dir_fd=self.tmp_fd)
            if self.mailbox.fsync:
                started = time.perf_counter()
                fsync_directory_shared(target_fd, f"{self.directories.path}/{self.target}")
                fsync_seconds += time.perf_counter() - started
        except BaseException:
            self.abort()
            raise
        self.done = True
        self._close()
        self.charge.commit()
        return StoreResult(
            location=str(self.directories.path / self.target / final),
            size=self.size,
            write_seconds=self.write_seconds,
            fsync_seconds=fsync_seconds,
        )

    def _link(self) -> tuple[int, str]:
        """``new/`` (or ``cur/``) and the name the file got there."""
        target_fd = _subdir(self.directories, self.target, self.mailbox.owner)
        return target_fd, self._link_without_replacing(target_fd)

    def _link_without_replacing(self, target_fd: int) -> str:
        final = self.name + (f":2,{self.flags}" if self.flags else "")
        for _ in range(100):
            try:
                if self.anonymous_fd is not None:
                    # linkat(2) of an O_TMPFILE through /proc: fails with EEXIST, never replaces.
                    os.link(f"/proc/self/fd/{self.anonymous_fd}", final, dst_dir_fd=target_fd, follow_symlinks=True)
                else:
                    os.link(self.name, final, src_dir_fd=self.tmp_fd, dst_dir_fd=target_fd, follow_symlinks=False)
                return final
            except FileExistsError:
                # Unique names collide only after a clock step or a PID reuse: pick another, never replace.
                size_part = self.name.split(",", 1)[1]
                final = unique_name(0, 0).split(",", 1)[0] + "," + size_part
                final += f":2,{self.flags}" if self.flags else ""
        raise OSError(errno.EEXIST, "could not find a free Maildir name")

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.anonymous_fd is None:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self.tmp_fd)
        self._close()
        self.charge.cancel()

    def _close(self) -> None:
        if self.anonymous_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.anonymous_fd)
        _maildirs.release(self.directories)
        if self.removed is not None:
            _maildirs.release(self.removed)


def open_subdir(maildir_fd: int, name: str, owner: tuple[int, int] | None) -> int:
    """``tmp``, ``new`` or ``cur`` of a Maildir (or Maildir++ folder); when it is missing, all three are
    created first (owned by ``owner``, the Maildir fsynced). Trying the open first saves three
    ``mkdir`` calls per delivery into a Maildir that exists, which is nearly every delivery."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=maildir_fd)
    except FileNotFoundError:
        pass
    created = False
    for sub in SUBDIRS:
        try:
            os.mkdir(sub, 0o700, dir_fd=maildir_fd)
        except FileExistsError:
            continue
        created = True
        if owner is not None:
            os.chown(sub, *owner, dir_fd=maildir_fd, follow_symlinks=False)
    if created:
        os.fsync(maildir_fd)
    return os.open(name, flags, dir_fd=maildir_fd)


_MaildirKey = tuple[Path, Path, str | None, bool, int | None, tuple[int, int] | None, tuple[int, int] | None]
_maildirs: DirectoryCache[_MaildirKey] = DirectoryCache()
"""Open Maildirs (README, "Storage"): the Maildir, the folder delivered to, and its tmp, new and cur."""


def _cache_key(mailbox: Mailbox) -> _MaildirKey:
    """Everything that decides which directory a delivery opens, and with whose authority."""
    root = mailbox.root or mailbox.path.parent
    return (
        root,
        mailbox.path,
        mailbox.folder,
        mailbox.create_folder,
        mailbox.max_folders,
        mailbox.owner,
        mailbox.system_user,
    )


def _directory(directories: CachedDirectories) -> int:
    """The directory copies go to: the folder, or the Maildir itself."""
    return directories.fds.get("folder", directories.fds["maildir"])


def _subdir(directories: CachedDirectories, name: str, owner: tuple[int, int] | None) -> int:
    """``tmp``, ``new`` or ``cur`` of the cached directory, opened (created) the first time it is used."""
    return _maildirs.descriptor(directories, name, lambda: open_subdir(_directory(directories), name, owner))


def _removed(directories: CachedDirectories, error: OSError) -> bool:
    """Whether ``error`` came from a directory removed (or replaced) since it was opened: ``ENOENT``
    creating in it, or any error (ext4 refuses ``O_TMPFILE`` there with ``EPERM``) while one of the
    directories has no link left. Checked only after a failure, so a delivery pays nothing for it."""
    if isinstance(error, FileNotFoundError):
        return True
    try:
        # A copy: another user of the entry may be adding new/ or cur/ to it meanwhile.
        return any(os.fstat(fd).st_nlink == 0 for fd in list(directories.fds.values()))
    except OSError:
        return False


def _open_fresh(mailbox: Mailbox, size: int | None) -> tuple[CachedDirectories, MaildirCharge | None]:
    """Open (creating when needed) the Maildir, or its Maildir++ folder, without following links, and
    keep its descriptors in the cache (leased to the caller).

    The quota is checked here for a copy of ``size`` bytes (None: already checked), on the Maildir
    root where ``maildirsize`` lives (folders count towards their Maildir's quota), before any byte is
    written and before a folder is created: over quota raises ``DeliveryError``.
    """
    root = mailbox.root or mailbox.path.parent
    maildir_fd = open_below_mailbox_root(mailbox, split_below(root, mailbox.path))
    fds = {"maildir": maildir_fd}
    charge = None
    location = mailbox.path
    try:
        if size is not None:
            charge = charge_maildir(maildir_fd, mailbox, size)
        if mailbox.folder is not None:
            # A folder's parent must be a whole Maildir too (tmp, new, cur): IMAP servers look for them.
            os.close(open_subdir(maildir_fd, "tmp", mailbox.owner))
            folder_fd = _open_folder(maildir_fd, mailbox)
            if folder_fd is not None:
                fds["folder"] = folder_fd
                location = mailbox.path / f".{mailbox.folder}"
    except BaseException:
        if charge is not None:
            charge.cancel()
        os.close(maildir_fd)
        raise
    key = _cache_key(mailbox)
    directories = _maildirs.insert(key, fds, location)
    if mailbox.folder is not None and "folder" not in fds:
        # INBOX instead of a missing folder: not kept, so a folder created meanwhile is used next time.
        _maildirs.discard(key, directories)
    return directories, charge


def _open_folder(maildir_fd: int, mailbox: Mailbox) -> int | None:
    """The folder's descriptor, or None for INBOX when it is missing and may not be created.

    A missing folder is created only with ``create_folder`` and while the Maildir has fewer than
    ``max_folders`` folders: the name comes from the sender, who must not fill the disk's inode table
    or the user's folder list (README, "Folders"). Counted only when a folder is missing.
    """
    assert mailbox.folder is not None
    name = f".{mailbox.folder}"
    try:
        folder_fd = open_below(maildir_fd, [name], create=False, owner=mailbox.owner)
    except FileNotFoundError:
        if not mailbox.create_folder:
            return None
        if mailbox.max_folders is not None and count_folders(maildir_fd) >= mailbox.max_folders:
            return None
        try:
            folder_fd = open_below(maildir_fd, [name], create=True, owner=mailbox.owner)
        except FileNotFoundError:
            return None
        # Dovecot's lda_mailbox_autosubscribe: the new folder shows in clients that list subscribed
        # folders only. A file that cannot be written costs the subscription, never the message.
        with contextlib.suppress(OSError):
            subscribe(maildir_fd, mailbox.folder, mailbox.owner, fsync=mailbox.fsync)
    try:
        try:
            marker = os.open(
                "maildirfolder",
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=folder_fd,
            )
        except FileExistsError:
            pass
        else:
            if mailbox.owner is not None:
                os.fchown(marker, *mailbox.owner)
            os.close(marker)
            os.fsync(folder_fd)
    except BaseException:
        os.close(folder_fd)
        raise
    return folder_fd


_anonymous_files = os.path.isdir("/proc/self/fd") and hasattr(os, "O_TMPFILE")
"""Whether to try O_TMPFILE: it needs /proc to be linked later without privileges."""


def _open_anonymous(tmp_fd: int) -> int | None:
    """An unnamed file in ``tmp/`` (``O_TMPFILE``), or None where the filesystem has no such thing
    (NFS, some FUSE): then the classic named file in ``tmp/`` is used."""
    if not _anonymous_files:
        return None
    try:
        return os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, FILE_MODE, dir_fd=tmp_fd)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise


class MaildirStore:
    """Writes copies into Maildir (and Maildir++ folders); see ``storage.base`` for the contract."""

    def stage(self, mailbox: Mailbox, message: MessageCopy) -> _StagedMaildirFile:
        key = _cache_key(mailbox)
        directories = _maildirs.lease(key)
        if directories is not None:
            try:
                return self._stage_cached(mailbox, message, directories)
            except OSError as error:
                if not _removed(directories, error):
                    _maildirs.release(directories)
                    raise
                # The Maildir was removed since its descriptors were opened: once more at its path.
                _maildirs.discard(key, directories)
                _maildirs.release(directories)
            except BaseException:
                _maildirs.release(directories)
                raise
        directories, charge = _open_fresh(mailbox, message.size)
        assert charge is not None
        try:
            return self._stage_in(mailbox, message, directories, charge)
        except BaseException:
            _maildirs.release(directories)
            raise

    def _stage_cached(
        self, mailbox: Mailbox, message: MessageCopy, directories: CachedDirectories
    ) -> _StagedMaildirFile:
        """Stage into descriptors kept from an earlier delivery: a system user's home is checked again
        (``userfs.check_home``) and the quota is charged, as for freshly opened ones."""
        if mailbox.system_user is not None:
            check_home(mailbox.root or mailbox.path.parent, mailbox.system_user[0])
        charge = charge_maildir(directories.fds["maildir"], mailbox, message.size)
        return self._stage_in(mailbox, message, directories, charge)

    def _stage_in(
        self, mailbox: Mailbox, message: MessageCopy, directories: CachedDirectories, charge: MaildirCharge
    ) -> _StagedMaildirFile:
        """Write the copy into ``tmp/`` of the leased directories; on failure the charge is cancelled."""
        try:
            tmp_fd = _subdir(directories, "tmp", mailbox.owner)
            self._clean_stale_tmp(directories.path, tmp_fd)
            return self._write(mailbox, message, directories, tmp_fd, charge)
        except BaseException:
            charge.cancel()
            raise

    @staticmethod
    def _write(
        mailbox: Mailbox,
        message: MessageCopy,
        directories: CachedDirectories,
        tmp_fd: int,
        charge: MaildirCharge,
    ) -> _StagedMaildirFile:
        size = message.size
        vsize = size + message.header.count(b"\n") + message.body.newlines
        name = unique_name(size, vsize)
        started = time.perf_counter()
        anonymous_fd = _open_anonymous(tmp_fd)
        fd = anonymous_fd
        if fd is None:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=tmp_fd,
            )
        try:
            write_all(fd, message.header)
            message.body.copy_to(fd)
            if mailbox.owner is not None:
                os.fchown(fd, *mailbox.owner)
            written = time.perf_counter()
            if mailbox.fsync:
                os.fsync(fd)
            synced = time.perf_counter()
        except BaseException:
            os.close(fd)
            if anonymous_fd is None:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=tmp_fd)
            raise
        if anonymous_fd is None:
            os.close(fd)
        return _StagedMaildirFile(
            mailbox=mailbox,
            directories=directories,
            tmp_fd=tmp_fd,
            anonymous_fd=anonymous_fd,
            name=name,
            target="cur" if message.flags else "new",
            flags=message.flags,
            size=size,
            write_seconds=written - started,
            fsync_seconds=synced - written,
            charge=charge,
        )

    @staticmethod
    def _clean_stale_tmp(location: Path, tmp_fd: int) -> None:
        """Remove crash left-overs from ``tmp/``, at most once an hour per Maildir."""
        now = time.time()
        key = str(location)
        with _stale_lock:
            if now - _last_stale_scan.get(key, 0.0) < STALE_SCAN_INTERVAL:
                return
            _last_stale_scan[key] = now
        for entry in os.scandir(tmp_fd):
            try:
                if (
                    entry.is_file(follow_symlinks=False)
                    and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS
                ):
                    os.unlink(entry.name, dir_fd=tmp_fd)
            except OSError:
                continue
