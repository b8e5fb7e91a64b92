"""Free space at RCPT: refuse a recipient whose mailbox filesystem could not take the message.

RFC 5321 §4.2.5 and RFC 3463 X.3.1: when the disk is full the answer is ``452 4.3.1`` (temporary: the
client keeps the message and retries), and it is better given at RCPT, per recipient, than after DATA.
Both blocks and inodes count (a Maildir message needs one inode; a full inode table fails like a full
disk), minus ``free_space_reserve``: a percentage of the filesystem (``1%``) or a size (``500M``), kept
free so that mda never fills the disk that Dovecot and the system also need.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mda import replies
from mda.config import Config, Reserve
from mda.policy import Resolution, template_root
from mda.replies import DeliveryError, Reply
from mda.storage.quota import check_quota_before_data

INODES_PER_MESSAGE = 4
"""A first delivery may create the Maildir root, ``tmp``, ``new`` and ``cur``, then the message itself:
ask for that many free inodes beyond the reserve (an mbox needs at most one, the bound is harmless)."""


@dataclass(frozen=True)
class SpaceCheck:
    """What ``statvfs`` said about one mailbox's filesystem, and whether the message fits."""

    directory: Path
    free_bytes: int
    reserve_bytes: int
    free_inodes: int | None
    reserve_inodes: int
    size: int

    @property
    def bytes_ok(self) -> bool:
        return self.free_bytes - self.size >= self.reserve_bytes

    @property
    def inodes_ok(self) -> bool:
        return self.free_inodes is None or self.free_inodes - INODES_PER_MESSAGE >= self.reserve_inodes

    @property
    def fits(self) -> bool:
        return self.bytes_ok and self.inodes_ok

    @property
    def comfortable(self) -> bool:
        """Far enough from the reserve that a tenth of a second of deliveries cannot change the answer."""
        bytes_left = self.free_bytes - self.size - self.reserve_bytes
        inodes_left = None if self.free_inodes is None else self.free_inodes - self.reserve_inodes
        return bytes_left > MARGIN_BYTES and (inodes_left is None or inodes_left > MARGIN_INODES)

    def describe(self) -> str:
        inodes = "not counted" if self.free_inodes is None else f"{self.free_inodes} inodes free"
        return (
            f"free space at {self.directory}: {self.free_bytes} bytes free, reserve {self.reserve_bytes}, "
            f"message {self.size}; {inodes}, reserve {self.reserve_inodes}: "
            + ("fits" if self.fits else "does not fit")
        )


STATVFS_TTL = 0.1
"""Seconds one ``statvfs`` answer may serve later RCPTs for the same mailbox, and only while it leaves a wide
margin (below): a busy server then makes one call per mailbox per tenth of a second, while a filesystem
close to its reserve is asked afresh every time, so a filling disk is seen at once."""
MARGIN_BYTES = 256 * 1024 * 1024
MARGIN_INODES = 4096
_recent: dict[Path, tuple[float, Path, os.statvfs_result]] = {}


def _statvfs(path: Path, *, fresh: bool) -> tuple[Path, os.statvfs_result, bool]:
    """(directory, statvfs, whether it came from the cache)."""
    now = time.monotonic()
    cached = _recent.get(path)
    if not fresh and cached is not None and now - cached[0] < STATVFS_TTL:
        return cached[1], cached[2], True
    directory = existing_ancestor(path)
    result = os.statvfs(directory)
    if len(_recent) > 4096:
        _recent.clear()
    _recent[path] = (now, directory, result)
    return directory, result, False


def existing_ancestor(path: Path) -> Path:
    """The nearest existing directory at or above ``path`` (a new mailbox lands on its parent's filesystem)."""
    current = path.absolute()
    while not current.is_dir() and current != current.parent:
        current = current.parent
    return current


def mail_roots(config: Config) -> tuple[Path, ...]:
    """The fixed directories mail is stored under: the part of ``storage.path`` and of each domain's
    ``path`` before the first ``{field}``, once each, in order.

    A bounded set (the operator's own templates, never an address), so it can label metrics. Templates
    that start with ``{home}`` (system users) have no fixed part and are left out.
    """
    templates = [config.storage.path, *(d.mailbox.path for d in config.domains.values() if d.mailbox.path)]
    roots = [template_root(t) for t in templates if not t.startswith("{")]
    return tuple(dict.fromkeys(roots))


def check_space(path: Path, size: int | None, reserve: Reserve) -> SpaceCheck:
    """``statvfs`` the filesystem that holds (or will hold) ``path``; ``size`` is the SIZE parameter or 0.

    Counts blocks available to unprivileged users (``f_bavail``) even when running as root: the blocks
    reserved for root are the system's margin, not mda's. A filesystem that reports no inode table
    (``f_files == 0``, e.g. btrfs) is not checked for inodes.
    """
    check, cached = _space_check(path, size, reserve, fresh=False)
    if cached and not check.comfortable:
        check, _ = _space_check(path, size, reserve, fresh=True)
    return check


def _space_check(path: Path, size: int | None, reserve: Reserve, *, fresh: bool) -> tuple[SpaceCheck, bool]:
    directory, stat, cached = _statvfs(path, fresh=fresh)
    total_bytes = stat.f_blocks * stat.f_frsize
    check = SpaceCheck(
        directory=directory,
        free_bytes=stat.f_bavail * stat.f_frsize,
        reserve_bytes=reserve.of(total_bytes),
        free_inodes=stat.f_favail if stat.f_files else None,
        reserve_inodes=reserve.inodes_of(stat.f_files),
        size=size or 0,
    )
    return check, cached


def check_capacity(
    config: Config, resolution: Resolution, size: int | None, *, explain: bool = False, read_only: bool = False
) -> Resolution:
    """An accepted resolution stays accepted only if every mailbox has room: free space (``452 4.3.1``)
    and quota (``552 5.2.2`` / ``452 4.2.2``, RFC 1870 §6: refuse at RCPT what SIZE says cannot fit).

    Blocking (``statvfs``, reading ``maildirsize``), but cheap: a few system calls per mailbox. With
    ``explain`` the figures are appended to the steps, so ``mda resolve`` shows them; a session does not
    pay for the text. A mailbox whose check itself fails (permissions, an unreadable ``maildirsize``) is
    not refused here: delivery will find the real error and say so. ``read_only`` (the explaining
    commands) writes nothing: a stale ``maildirsize`` is summed from the Maildir, not rebuilt.
    """
    if not resolution.accepted:
        return resolution
    steps: list[str] = []
    refusal: Reply | None = None
    for mailbox in resolution.mailboxes:
        try:
            space = check_space(mailbox.path, size, config.free_space_reserve)
        except OSError as error:
            steps.append(f"free space at {mailbox.path}: not checked ({error.strerror})")
        else:
            if explain:
                steps.append(space.describe())
            if not space.fits and refusal is None:
                refusal = replies.DISK_FULL
        if mailbox.quota_bytes or mailbox.quota_messages:
            try:
                over = check_quota_before_data(mailbox, size, read_only=read_only)
            except (OSError, DeliveryError) as error:
                steps.append(f"quota of {mailbox.path}: not checked ({type(error).__name__})")
                continue
            limits = f"{mailbox.quota_bytes or 0} bytes, {mailbox.quota_messages or 0} messages"
            steps.append(f"quota of {mailbox.path} ({limits}): " + ("full" if over else "room for the message"))
            if over is not None and (refusal is None or (over.is_temporary and not refusal.is_temporary)):
                refusal = over
        elif explain:
            steps.append(f"quota of {mailbox.path}: none")
    if refusal is None:
        return replace(resolution, steps=(*resolution.steps, *steps)) if steps else resolution
    return replace(resolution, reply=refusal, steps=(*resolution.steps, *steps))
