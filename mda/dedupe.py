"""Duplicate suppression across transactions: one Message-ID, one recipient, one stored copy per window.

An MX that loses the connection after sending the final dot but before reading the reply retries the
whole message (RFC 5321 §4.5.4.1 accepts that duplicates may result). With ``duplicate_window`` set, a
message whose ``Message-ID`` (RFC 5322 §3.6.4) was already stored for the same recipient within the
window is acknowledged (``250``) and not stored again. The record lives in a SQLite file under
``state_dir`` so it survives restarts and is shared by worker processes (SQLite locks the file).

A message without a Message-ID is never suppressed: there is nothing safe to compare.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from mda import replies
from mda.config import Config
from mda.dataread import DataResult
from mda.spool import Spool
from mda.state import state_dir
from mda.trace import header_fields
from mda.transaction import Outcome, Transaction

DB_NAME = "duplicates.sqlite"
BUSY_TIMEOUT = 10.0


def message_id(header_section: bytes) -> str | None:
    """The first ``Message-ID`` value, without surrounding space; None when absent or empty."""
    values = header_fields(header_section, b"Message-ID")
    if not values:
        return None
    text = values[0].decode("utf-8", "replace").strip()
    return text or None


class DuplicateLog:
    """``(Message-ID, recipient)`` pairs seen within the window; one SQLite connection per transaction."""

    def __init__(self, path: Path, window: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.window = window
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS seen (message_id TEXT NOT NULL, recipient TEXT NOT NULL,"
            " at REAL NOT NULL, PRIMARY KEY (message_id, recipient))"
        )

    def close(self) -> None:
        self.db.close()

    def seen(self, msgid: str, recipient: str) -> bool:
        """True when this pair was recorded less than ``window`` seconds ago (``recipient`` is a
        ``Resolution.key``: the address as the policy compares it)."""
        row = self.db.execute(
            "SELECT at FROM seen WHERE message_id = ? AND recipient = ?", (msgid, recipient)
        ).fetchone()
        return row is not None and self.clock() - row[0] < self.window

    def record(self, msgid: str, recipients: list[str]) -> None:
        """Remember stored copies (after their ``commit``), and forget pairs older than the window."""
        now = self.clock()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO seen (message_id, recipient, at) VALUES (?, ?, ?)",
                [(msgid, r, now) for r in recipients],
            )
            self.db.execute("DELETE FROM seen WHERE at < ?", (now - self.window,))


@contextlib.contextmanager
def duplicate_log(config: Config, header_section: bytes) -> Iterator[tuple[DuplicateLog, str] | None]:
    """The log and the message's id when suppression is on and the message has an id; else None.

    A state file that cannot be opened turns suppression off for this message (storing a duplicate is
    better than refusing mail); delivery logs nothing extra for it.
    """
    msgid = message_id(header_section) if config.duplicate_window > 0 else None
    if msgid is None:
        yield None
        return
    try:
        log = DuplicateLog(state_dir(config) / DB_NAME, config.duplicate_window)
    except (OSError, sqlite3.Error):
        yield None
        return
    try:
        yield log, msgid
    finally:
        log.close()


Work = Callable[[Config, Transaction, Spool, DataResult], list[Outcome]]


def suppress_duplicates(work: Work, *, lmtp: bool) -> Work:
    """Wrap ``deliver_lmtp``/``deliver_smtp``: recipients already served this Message-ID are answered
    ``250`` without a new copy; the others go through ``work``; successful copies are then recorded.

    SMTP keeps its single reply (RFC 5321 §3.3): when some recipients still need delivery, every
    recipient shares that delivery's reply.
    """

    def run(config: Config, txn: Transaction, spool: Spool, data: DataResult) -> list[Outcome]:
        if config.duplicate_window <= 0:
            return work(config, txn, spool, data)
        with duplicate_log(config, spool.header_section()) as found:
            if found is None:
                return work(config, txn, spool, data)
            log, msgid = found
            fresh = [r for r in txn.recipients if not log.seen(msgid, r.key)]
            outcomes = work(config, replace(txn, recipients=fresh), spool, data) if fresh else []
            log.record(msgid, [o.resolution.key for o in outcomes if o.reply.is_success])
            by_key = {o.resolution.key: o for o in outcomes}
            shared = outcomes[0].reply if outcomes and not lmtp else None
            merged = []
            for resolution in txn.recipients:
                outcome = by_key.get(resolution.key)
                if outcome is None:
                    text = f"<{resolution.address}> {txn.queue_id} Saved (duplicate, not stored again)"
                    reply = shared or replies.DELIVERED.with_text(text if lmtp else f"{txn.queue_id} Saved")
                    outcome = Outcome(resolution, reply, reason="duplicate Message-ID within duplicate_window")
                merged.append(outcome)
            return merged

    return run
