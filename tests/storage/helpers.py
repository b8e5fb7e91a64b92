"""Small builders shared by the storage tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mda.storage.base import Mailbox

SENDER = "sender@example.org"


def maildir_box(root: Path, user: str = "alice", **settings: Any) -> Mailbox:
    """A Maildir mailbox ``ROOT/example.test/USER/Maildir`` with ``ROOT`` as the fixed root."""
    return Mailbox(format="maildir", path=root / "example.test" / user / "Maildir", root=root, **settings)


def mbox_box(root: Path, user: str = "alice", **settings: Any) -> Mailbox:
    """An mbox mailbox ``ROOT/example.test/USER/mbox`` with ``ROOT`` as the fixed root."""
    return Mailbox(format="mbox", path=root / "example.test" / user / "mbox", root=root, **settings)
