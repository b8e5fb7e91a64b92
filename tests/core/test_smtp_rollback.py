"""SMTP's all-or-nothing delivery when a store fails mid-way (RFC 5321 §3.3: one reply for all).

A failure of one copy's ``stage`` or ``commit`` must abort every copy still staged, so nothing of them
becomes visible, and answer every recipient with the same ``4xx`` (a backend fault is never ``5xx``).
A store cannot be made to fail at a chosen call on a real disk, so ``FakeStore`` follows the ``Store``
contract of ``mda/storage/base.py`` in memory and fails on the call it is told to.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mda import replies, storage
from mda.config import Config, load
from mda.dataread import DataResult
from mda.delivery import SMTP, Recipient, Transaction
from mda.policy import Resolution
from mda.spool import Spool
from mda.storage.base import Mailbox, MessageCopy, StoreResult
from mda.trace import TraceInfo

FORMAT = "fake"


@dataclass
class FakeStore:
    """In-memory ``Store``: ``visible`` holds committed copies; ``fail`` maps a stage (``"stage"`` or
    ``"commit"``) to the 1-based number of the call that raises ``EIO``."""

    fail: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    staged: set[str] = field(default_factory=set)
    visible: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)

    def _call(self, stage: str) -> None:
        self.calls[stage] = self.calls.get(stage, 0) + 1
        if self.fail.get(stage) == self.calls[stage]:
            raise OSError(errno.EIO, f"{stage} failed")

    def stage(self, mailbox: Mailbox, message: MessageCopy) -> FakeStaged:
        self._call("stage")
        self.staged.add(str(mailbox.path))
        return FakeStaged(self, str(mailbox.path))


@dataclass
class FakeStaged:
    store: FakeStore
    name: str

    def commit(self) -> StoreResult:
        try:
            self.store._call("commit")
        except OSError:
            self.abort()  # the contract: a commit that raises leaves its copy undone
            raise
        self.store.staged.discard(self.name)
        self.store.visible.append(self.name)
        return StoreResult(self.name, 1)

    def abort(self) -> None:
        self.store.staged.discard(self.name)
        self.store.aborted.append(self.name)


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStore]:
    store = FakeStore()
    monkeypatch.setitem(storage._STORES, FORMAT, store)
    yield store


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "mda.yaml"
    path.write_text(f"domains: [example.test]\nstorage: {{path: '{tmp_path}/{{domain}}/{{user}}/Maildir'}}\n")
    return load(path)


def _smtp_delivery(config: Config, users: list[str]) -> list[tuple[int, str]]:
    recipients = [
        Recipient(
            Resolution(
                replies.RECIPIENT_OK,
                f"{user}@example.test",
                f"{user}@example.test",
                mailboxes=(Mailbox(FORMAT, Path(f"/fake/{user}")),),
            )
        )
        for user in users
    ]
    trace = TraceInfo("s@remote.test", "client.test", "127.0.0.1", "mx.example.test", "SMTP", "Q", time.time())
    txn = Transaction(queue_id="Q", sender="s@remote.test", recipients=recipients, trace=trace)
    with Spool() as spool:
        spool.write(b"Subject: all or nothing\n\nbody\n")
        outcomes = SMTP.fan_out(config, txn, spool, DataResult(size=spool.size))
    return [(o.reply.code, o.reply.enhanced) for o in outcomes]


def test_all_copies_are_committed_when_nothing_fails(config: Config, fake_store: FakeStore) -> None:
    assert _smtp_delivery(config, ["a", "b", "c"]) == [(250, "2.0.0")] * 3
    assert fake_store.visible == ["/fake/a", "/fake/b", "/fake/c"]
    assert fake_store.staged == set()


@pytest.mark.parametrize("failing", ["stage", "commit"])
@pytest.mark.parametrize("which", [1, 2, 3])
def test_a_failing_copy_leaves_nothing_staged_and_answers_4xx(
    config: Config, fake_store: FakeStore, failing: str, which: int
) -> None:
    fake_store.fail[failing] = which
    assert _smtp_delivery(config, ["a", "b", "c"]) == [(451, "4.3.0")] * 3
    assert fake_store.staged == set(), "a staged copy was neither committed nor aborted"
    if failing == "stage":
        assert fake_store.visible == []  # nothing was committed yet: nothing at all becomes visible
    else:
        # Copies committed before the failing one stay (a retry may duplicate them, never lose them);
        # the failing copy and every later one are undone.
        assert fake_store.visible == [f"/fake/{user}" for user in "abc"[: which - 1]]
        assert set(fake_store.aborted) == {f"/fake/{user}" for user in "abc"[which - 1 :]}


def test_a_failing_first_commit_makes_nothing_visible(config: Config, fake_store: FakeStore) -> None:
    fake_store.fail["commit"] = 1
    assert _smtp_delivery(config, ["a", "b"]) == [(451, "4.3.0")] * 2
    assert fake_store.visible == []
    assert sorted(fake_store.aborted) == ["/fake/a", "/fake/b"]
