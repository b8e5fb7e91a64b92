"""Mailbox storage: the ``Store`` contract (``base``) and its Maildir and mbox implementations."""

from __future__ import annotations

from mda.storage.base import Store
from mda.storage.maildir import MaildirStore
from mda.storage.mbox import MboxStore

_STORES: dict[str, Store] = {"maildir": MaildirStore(), "mbox": MboxStore()}


def store_for(storage_format: str) -> Store:
    """The store for ``maildir`` or ``mbox`` (the config loader allows no other value)."""
    return _STORES[storage_format]
