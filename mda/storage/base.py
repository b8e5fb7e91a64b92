"""The ``Store`` contract: how one recipient's copy becomes a durable file.

Order of calls, and what may persist before commit:

1. ``store.stage(mailbox, message)`` writes the whole copy where no reader sees it yet and makes it
   durable: Maildir creates a unique file in ``tmp/`` with ``O_EXCL``, writes, ``fsync``s; mbox takes the
   ``fcntl`` lock and the dot-lock, appends, ``fsync``s and keeps both locks. On failure nothing of the
   copy remains (the tmp file is unlinked, the mbox truncated back and unlocked) and a ``DeliveryError``
   or ``OSError`` is raised for ``replies.reply_for_error``.
2. ``staged.commit()`` makes it visible: Maildir links the file into ``new/`` (never replacing an
   existing name), unlinks the tmp name and ``fsync``s ``new/``; mbox releases the locks. Only after
   ``commit`` returns may ``250`` be sent for that copy.
3. ``staged.abort()`` undoes a staged copy (unlink, truncate); it never raises.

LMTP stages and commits each recipient on its own; SMTP stages every copy first, then commits them all,
or aborts them all (docs/architecture.md). Stores never import metrics: they report their timings in
``StoreResult`` and the delivery layer records them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mda.config import StorageConfig
from mda.enums import StorageFormat
from mda.spool import Spool, SpoolTail


@dataclass(frozen=True)
class Mailbox:
    """Where one recipient's copy goes, fully resolved by policy (no template left). Settings that come
    from ``storage:`` default to its declared defaults (``mda.config.StorageConfig``)."""

    format: StorageFormat
    path: Path
    folder: str | None = None
    """Maildir++ folder name as stored on disk without the leading dot (already encoded), or None."""
    create_folder: bool = False
    max_folders: int | None = None
    """With ``create_folder``: a missing folder is not created when the Maildir already has this many
    Maildir++ folders; the copy goes to INBOX instead. None: no cap."""
    quota_bytes: int | None = None
    quota_messages: int | None = None
    quota_full_tempfail: bool = StorageConfig.quota_full_tempfail
    owner: tuple[int, int] | None = None
    """(uid, gid) given to what mda creates when it runs as root; None leaves ownership alone."""
    fsync: bool = StorageConfig.fsync
    lock_timeout: float = StorageConfig.lock_timeout
    root: Path | None = None
    """The fixed directory above the variable part of the path template (never created above it)."""
    sieve: Path | None = None
    """The user's active Sieve script (RFC 5228), rendered from its template; None: no user script."""
    system_user: tuple[int, int] | None = None
    """(uid, gid) of the system user (``passwd`` domain) whose home is ``root``: the home is never
    created and must be theirs, files read there must be theirs, and when mda runs as root the file
    work on this mailbox runs with their file-system identity (``mda.storage.userfs``)."""

    @functools.cached_property
    def key(self) -> tuple[StorageFormat, str, str | None]:
        """Identity for de-duplication: two recipients that land in the same place get one copy (made
        once: the mailbox never changes, and a copy made by ``replace`` makes its own)."""
        return (self.format, str(self.path), self.folder)


@dataclass(frozen=True)
class MessageCopy:
    """One recipient's copy: its own trace header block in front of the shared body (or, when Sieve
    edited the header section, the whole edited header in front of the rest of the spool)."""

    header: bytes
    body: Spool | SpoolTail
    envelope_sender: str = ""
    flags: str = ""
    """Maildir flag letters (imap4flags); a flagged copy goes to ``cur/`` with ``:2,FLAGS``."""

    @property
    def size(self) -> int:
        return len(self.header) + self.body.size


@dataclass
class StoreResult:
    """What a committed copy reports back: where it is, and how long the disk work took."""

    location: str
    size: int
    write_seconds: float = 0.0
    fsync_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class StagedCopy(Protocol):
    def commit(self) -> StoreResult:
        """Make the staged copy visible and durable; raises on failure (the copy is then undone)."""
        ...

    def abort(self) -> None:
        """Undo the staged copy; never raises."""
        ...


class Store(Protocol):
    def stage(self, mailbox: Mailbox, message: MessageCopy) -> StagedCopy:
        """Write the copy durably but invisibly (see the module docstring for the contract)."""
        ...
