"""Per-mailbox quotas: Maildir++ ``maildirsize`` for Maildir, the file size for mbox.

``maildirsize`` is shared with Dovecot, Courier and maildrop, so it is written exactly as Dovecot's
``quota-maildir.c`` writes it (Maildir++ quota spec, courier-imap ``maildirquota``):

- first line, the limit: ``<bytes>S,<messages>C``; only the limits that are set, ``0S`` when none is;
- then usage lines ``<bytes> <messages>``: one summary line after a rebuild, then one delta per
  delivery or expunge, each appended with a single ``write()`` under ``O_APPEND``; the usage is their sum;
- rebuilt (from ``S=`` in the name of every message in ``new/`` and ``cur/`` of INBOX and of every
  ``.folder``) when missing, unreadable, 5120 bytes or more, holding other limits than the configured
  ones, or, when this message would go over the limit, holding deltas or older than 15 minutes;
- rebuilt under Dovecot's dot-lock ``maildirsize.lock``, which becomes the new file by ``rename``.

A limit of 0 means "no limit", as in Maildir++. Checking and charging are separate so the Store
contract holds: the check happens in ``stage`` (refusing with ``DeliveryError``), the delta is appended
only after ``commit`` made the message visible.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass

from mda.enums import StorageFormat
from mda.replies import MAILBOX_FULL, MAILBOX_FULL_TEMPORARY, DeliveryError, Reply
from mda.storage.base import Mailbox
from mda.storage.dotlock import create_dotlock
from mda.storage.fsutil import DIR_FLAGS, open_below, split_below
from mda.storage.userfs import fs_identity, open_home, open_user_file

MAILDIRSIZE = "maildirsize"
MAILDIRSIZE_LOCK = MAILDIRSIZE + ".lock"
REBUILD_SIZE = 5120
"""Dovecot reads at most 5120 bytes and recalculates when the file reaches that size (Maildir++ spec)."""
STALE_SECONDS = 15 * 60
"""Over the limit, a file older than this is not trusted (Dovecot ``MAILDIRSIZE_STALE_SECS``)."""
LOCK_STALE_SECONDS = 30.0
"""Dovecot's stale timeout for the ``maildirsize.lock`` dot-lock."""
FILE_MODE = 0o600
MESSAGE_DIRS = ("new", "cur")

_SIZE_IN_NAME = re.compile(r",S=(\d+)(?:[,:]|$)")
_LIMIT_PART = re.compile(r"(\d+)([SC])")
_USAGE_LINE = re.compile(rb"(-?\d+)[ \t]+(-?\d+)")


@dataclass(frozen=True)
class QuotaLimit:
    """A Maildir++ limit; 0 is unlimited."""

    bytes: int = 0
    messages: int = 0

    @classmethod
    def of(cls, mailbox: Mailbox) -> QuotaLimit:
        return cls(mailbox.quota_bytes or 0, mailbox.quota_messages or 0)

    @property
    def enabled(self) -> bool:
        return bool(self.bytes or self.messages)

    def header(self) -> str:
        """The first line as Dovecot writes it: ``0S`` stands for "no limit" rather than an empty line."""
        parts = []
        if self.bytes or not self.messages:
            parts.append(f"{self.bytes}S")
        if self.messages:
            parts.append(f"{self.messages}C")
        return ",".join(parts)

    @classmethod
    def parse(cls, line: str) -> QuotaLimit | None:
        """Read a first line; None when it is not ``<n>S``/``<n>C`` items separated by commas."""
        values = {"S": 0, "C": 0}
        for part in line.split(","):
            match = _LIMIT_PART.fullmatch(part)
            if match is None:
                return None
            values[match.group(2)] = int(match.group(1))
        return cls(values["S"], values["C"])


@dataclass(frozen=True)
class Usage:
    bytes: int = 0
    messages: int = 0

    def exceeds(self, limit: QuotaLimit, size: int, count: int = 1) -> bool:
        """True when adding ``size`` bytes and ``count`` messages would pass a limit (Dovecot's test)."""
        return bool(
            (limit.bytes and self.bytes + size > limit.bytes)
            or (limit.messages and self.messages + count > limit.messages)
        )


@dataclass(frozen=True)
class MaildirSize:
    """A parsed ``maildirsize``: its limit, the summed usage and how many usage lines it holds."""

    limit: QuotaLimit
    usage: Usage
    usage_lines: int


def parse_maildirsize(data: bytes) -> MaildirSize | None:
    """Parse the file's content; None when it must be rebuilt (corrupt, NUL, negative totals).

    A last line without its LF is a write still in progress elsewhere and is ignored, as Dovecot does.
    """
    if b"\0" in data:
        return None
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    if not lines:
        return None
    limit = QuotaLimit.parse(lines[0].decode("ascii", "replace"))
    if limit is None:
        return None
    total_bytes = total_messages = 0
    for line in lines[1:]:
        match = _USAGE_LINE.fullmatch(line.strip())
        if match is None:
            return None
        total_bytes += int(match.group(1))
        total_messages += int(match.group(2))
    if total_bytes < 0 or total_messages < 0 or len(lines) < 2:
        return None
    return MaildirSize(limit, Usage(total_bytes, total_messages), len(lines) - 1)


def message_size(name: str) -> int | None:
    """``S=`` from a Maildir file name (``,S=<n>`` followed by ``,``, ``:`` or the end), else None."""
    match = _SIZE_IN_NAME.search(name)
    return int(match.group(1)) if match else None


def scan_usage(maildir_fd: int) -> Usage:
    """Sum every message of INBOX and of every ``.folder`` below it, never following a symlink."""
    total = Usage()
    total = _add_maildir(maildir_fd, total)
    for entry in os.scandir(maildir_fd):
        if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir(follow_symlinks=False):
            try:
                folder_fd = os.open(entry.name, DIR_FLAGS, dir_fd=maildir_fd)
            except OSError:
                continue
            try:
                total = _add_maildir(folder_fd, total)
            finally:
                os.close(folder_fd)
    return total


def _add_maildir(maildir_fd: int, total: Usage) -> Usage:
    size, count = total.bytes, total.messages
    for sub in MESSAGE_DIRS:
        try:
            sub_fd = os.open(sub, DIR_FLAGS, dir_fd=maildir_fd)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            for entry in os.scandir(sub_fd):
                if entry.name.startswith("."):
                    continue
                found = message_size(entry.name)
                if found is None:
                    try:
                        found = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # expunged or moved to cur/ while we looked
                size += found
                count += 1
        finally:
            os.close(sub_fd)
    return Usage(size, count)


def rebuild_maildirsize(maildir_fd: int, limit: QuotaLimit, owner: tuple[int, int] | None) -> Usage:
    """Scan the Maildir and write a fresh ``maildirsize`` (limit line and one summary line).

    Written into Dovecot's dot-lock file and renamed over the old one, so a reader sees the old file or
    the new one, never half of it. When another process holds that lock it is rebuilding right now: the
    scanned usage is used and the file left to it, as Dovecot does.
    """
    usage = scan_usage(maildir_fd)
    lock_fd = create_dotlock(maildir_fd, MAILDIRSIZE_LOCK, stale_seconds=LOCK_STALE_SECONDS, now=time.time())
    if lock_fd is None:
        return usage
    try:
        try:
            os.write(lock_fd, f"{limit.header()}\n{usage.bytes} {usage.messages}\n".encode("ascii"))
            if owner is not None:
                os.fchown(lock_fd, *owner)
        finally:
            os.close(lock_fd)
        os.rename(MAILDIRSIZE_LOCK, MAILDIRSIZE, src_dir_fd=maildir_fd, dst_dir_fd=maildir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(MAILDIRSIZE_LOCK, dir_fd=maildir_fd)
        raise
    return usage


def maildir_usage(
    maildir_fd: int, limit: QuotaLimit, incoming: int, owner: tuple[int, int] | None, *, read_only: bool = False
) -> Usage:
    """The current usage from ``maildirsize``, rebuilding it when the Maildir++ rules say so.

    A ``maildirsize`` that cannot be opened, or is not a regular file with one link owned by ``owner``
    (a FIFO, a device, a hard link to someone else's file), is treated like a corrupt one: rebuilt,
    which renames a fresh file over that name and leaves whatever it was linked to untouched.

    ``read_only`` (the explaining commands, ``mda resolve``): where a rebuild is due the Maildir is
    scanned and nothing is written. Run as root, a rebuild would leave a ``root:root 0600`` file that
    the mail user can no longer update.
    """

    def rebuild() -> Usage:
        return scan_usage(maildir_fd) if read_only else rebuild_maildirsize(maildir_fd, limit, owner)

    try:
        fd = _open_maildirsize(maildir_fd, os.O_RDONLY, owner)
    except OSError:
        return rebuild()
    try:
        data = os.read(fd, REBUILD_SIZE)
        modified = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    parsed = None if len(data) >= REBUILD_SIZE else parse_maildirsize(data)
    if parsed is None or parsed.limit != limit:
        return rebuild()
    if parsed.usage.exceeds(limit, incoming) and (parsed.usage_lines > 1 or time.time() - modified > STALE_SECONDS):
        return rebuild()
    return parsed.usage


def _open_maildirsize(maildir_fd: int, flags: int, owner: tuple[int, int] | None) -> int:
    """``maildirsize`` opened without following a link nor waiting on a FIFO, and checked."""
    return open_user_file(maildir_fd, MAILDIRSIZE, flags, uid=owner[0] if owner is not None else None)


def full_reply(mailbox: Mailbox) -> Reply:
    """``552 5.2.2`` by default; ``452 4.2.2`` when the operator wants senders to retry (RFC 3463)."""
    return MAILBOX_FULL_TEMPORARY if mailbox.quota_full_tempfail else MAILBOX_FULL


@dataclass
class MaildirCharge:
    """A passed quota check whose usage delta is appended once the message is committed.

    It holds ``maildirsize`` (of the Maildir root, also for folder deliveries) open for appending when
    that file exists, opened right after the check (which may have rebuilt it); without the file there
    is nothing to keep up to date, and nothing is held.
    """

    maildirsize_fd: int | None
    size: int
    done: bool = False

    def commit(self) -> None:
        """Append ``<size> 1`` with one ``write()`` under ``O_APPEND``; never raises.

        The message is already delivered: a lost delta only makes the usage low until the next rebuild.
        A missing file is not created here (a file without its limit line would be corrupt).
        """
        if self.done:
            return
        if self.maildirsize_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.maildirsize_fd, f"{self.size} 1\n".encode("ascii"))
        self.cancel()

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            if self.maildirsize_fd is not None:
                os.close(self.maildirsize_fd)


def charge_maildir(maildir_fd: int, mailbox: Mailbox, size: int) -> MaildirCharge:
    """Check that ``size`` more bytes and one more message fit; raise the over-quota reply if not.

    Without a configured limit nothing is read, but the returned charge still appends its delta to an
    existing ``maildirsize`` so that an IMAP server enforcing its own quota keeps counting right.
    ``maildir_fd`` is borrowed.
    """
    limit = QuotaLimit.of(mailbox)
    if limit.enabled:
        usage = maildir_usage(maildir_fd, limit, size, mailbox.owner)
        if usage.exceeds(limit, size):
            raise DeliveryError(
                full_reply(mailbox),
                f"quota {limit.header()} exceeded at {mailbox.path}: "
                f"{usage.bytes} bytes, {usage.messages} messages, +{size}",
            )
    try:
        maildirsize_fd: int | None = _open_maildirsize(maildir_fd, os.O_WRONLY | os.O_APPEND, mailbox.owner)
    except OSError:
        maildirsize_fd = None
    return MaildirCharge(maildirsize_fd, size)


def check_mbox_quota(mailbox: Mailbox, current_size: int, size: int) -> None:
    """Refuse when the mbox would grow past ``quota_bytes``; an mbox's usage is its file size.

    ``quota_messages`` is not enforced for mbox: counting needs a parse of the whole file.
    """
    if mailbox.quota_bytes and current_size + size > mailbox.quota_bytes:
        raise DeliveryError(
            full_reply(mailbox),
            f"mbox {mailbox.path} at {current_size} bytes, +{size} over {mailbox.quota_bytes}",
        )


def check_quota_before_data(mailbox: Mailbox, size: int | None, *, read_only: bool = False) -> Reply | None:
    """The refusal for a recipient whose mailbox cannot take a message of ``size`` (RCPT ``SIZE=``), or None.

    Without ``SIZE`` (RFC 1870) only a mailbox already at its limit (no byte fits) is refused. A mailbox
    that does not exist yet is empty. Runs at RCPT: it never waits on a file a user planted (``O_NONBLOCK``,
    regular files only), and a system user's mailbox is read with that user's file-system identity. It
    may rebuild ``maildirsize``, unless ``read_only``.
    """
    limit = QuotaLimit.of(mailbox)
    if not limit.enabled:
        return None
    with fs_identity(mailbox.system_user):
        return _check_quota(mailbox, limit, 1 if size is None else size, read_only)  # "full": not one byte fits


def _check_quota(mailbox: Mailbox, limit: QuotaLimit, incoming: int, read_only: bool) -> Reply | None:
    try:
        fd = _open_existing(mailbox)
    except (FileNotFoundError, NotADirectoryError):
        return full_reply(mailbox) if Usage().exceeds(limit, incoming) else None
    try:
        if mailbox.format == StorageFormat.MBOX:
            used = os.stat(mailbox.path.name, dir_fd=fd, follow_symlinks=False).st_size
            over = bool(limit.bytes and used + incoming > limit.bytes)
        else:
            usage = maildir_usage(fd, limit, incoming, mailbox.owner, read_only=read_only)
            over = usage.exceeds(limit, incoming)
    except FileNotFoundError:
        over = Usage().exceeds(limit, incoming)
    finally:
        os.close(fd)
    return full_reply(mailbox) if over else None


def _open_existing(mailbox: Mailbox) -> int:
    """The Maildir root, or the mbox's directory, opened without following links and without creating.

    A planted symlink is never followed: ``O_NOFOLLOW|O_DIRECTORY`` fails on it (``ENOTDIR``) as on a
    missing mailbox, and delivery then refuses it with its own reply."""
    root = mailbox.root or mailbox.path.parent
    parts = split_below(root, mailbox.path)
    if mailbox.format == StorageFormat.MBOX:
        parts = parts[:-1]
    root_fd = open_home(root, mailbox.system_user[0]) if mailbox.system_user else os.open(root, DIR_FLAGS)
    try:
        return open_below(root_fd, parts, create=False, owner=None)
    finally:
        os.close(root_fd)
