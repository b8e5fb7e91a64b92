"""Fixtures for the storage tests: spooled messages, mailboxes under a temporary root, a tiny tmpfs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mda.spool import Spool
from mda.storage import maildir
from mda.storage.base import MessageCopy
from tests.peers.dovecot import dovecot_factory
from tests.peers.filesystems import small_tmpfs

__all__ = ["dovecot_factory"]

from tests.storage.helpers import SENDER


@pytest.fixture
def make_copy() -> Iterator[Callable[..., MessageCopy]]:
    """Build a ``MessageCopy`` from bytes; ``memory_limit`` small forces the spilled-spool path."""
    spools: list[Spool] = []

    def make(
        body: bytes,
        *,
        header: bytes = b"Return-Path: <sender@example.org>\n",
        sender: str = SENDER,
        memory_limit: int | None = None,
    ) -> MessageCopy:
        spool = Spool() if memory_limit is None else Spool(memory_limit=memory_limit)
        spool.write(body)
        spools.append(spool)
        return MessageCopy(header=header, body=spool, envelope_sender=sender)

    yield make
    for spool in spools:
        spool.close()


@pytest.fixture(params=["anonymous", "named"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing a Maildir copy: an unnamed ``O_TMPFILE`` file, or a named file in ``tmp/``
    (NFS, some FUSE)."""
    if request.param == "named":
        monkeypatch.setattr(maildir, "_anonymous_files", False)
    return str(request.param)


@pytest.fixture
def mail_root(tmp_path: Path) -> Path:
    root = tmp_path / "mail"
    root.mkdir()
    return root


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real filesystem that fills up, to show what ENOSPC does to a delivery."""
    with small_tmpfs(tmp_path / "tmpfs", "1m") as mount_point:
        yield mount_point
