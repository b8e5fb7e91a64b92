"""Mailbox storage: the ``Store`` contract (``base``) and its Maildir and mbox implementations."""

from __future__ import annotations

from dataclasses import dataclass

from mda.enums import StorageFormat
from mda.storage.base import Mailbox, MessageCopy, StagedCopy, Store, StoreResult
from mda.storage.maildir import MaildirStore
from mda.storage.mbox import MboxStore
from mda.storage.userfs import fs_identity

_STORES: dict[StorageFormat, Store] = {StorageFormat.MAILDIR: MaildirStore(), StorageFormat.MBOX: MboxStore()}


def store_for(storage_format: StorageFormat) -> Store:
    """The store for ``maildir`` or ``mbox`` (the config loader allows no other value)."""
    return _STORES[storage_format]


def stage(mailbox: Mailbox, message: MessageCopy) -> StagedCopy:
    """Stage one copy with the right store; a system user's mailbox is written with their file-system
    identity (stage, commit and abort alike), so everything created in their home is theirs and their
    files are opened with their rights, never root's."""
    user = mailbox.system_user
    with fs_identity(user):
        staged = store_for(mailbox.format).stage(mailbox, message)
    return staged if user is None else _AsUser(staged, user)


@dataclass
class _AsUser:
    """A staged copy whose commit and abort run with the mailbox owner's file-system identity."""

    staged: StagedCopy
    user: tuple[int, int]

    def commit(self) -> StoreResult:
        with fs_identity(self.user):
            return self.staged.commit()

    def abort(self) -> None:
        with fs_identity(self.user):
            self.staged.abort()
