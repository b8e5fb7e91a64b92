"""Duplicate suppression across transactions: one Message-ID, one recipient, one stored copy per window.

An MX that loses the connection after sending the final dot but before reading the reply retries the
whole message (RFC 5321 §4.5.4.1 accepts that duplicates may result). With ``duplicate_window`` set, a
message whose ``Message-ID`` (RFC 5322 §3.6.4) was already stored for the same recipient within the
window is acknowledged (``250``) and not stored again.

A record is *claimed* before the copy is written (``pending``, with its owner) and *committed* once the
copy is; only a committed record suppresses, so a record never causes a loss:

- a delivery that fails releases its claim; one that dies (crash, ``kill -9``) leaves a pending record
  that stops counting after ``PENDING_LEASE`` seconds, or at once when its owner was a process of this
  host that no longer runs;
- while another delivery holds a live claim, the recipient is answered ``451 4.3.0`` (the MX retries and
  then finds the record committed, or released);
- when the record store fails, the message is delivered anyway (at worst a duplicate) and the failure
  is logged (``state_error``).

The records live where ``state:`` says (mda/statestore): a SQLite file under ``state_dir``, or a
PostgreSQL database shared by several instances. A message without a Message-ID is never suppressed:
there is nothing safe to compare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from mda import logs, replies
from mda.config import Config
from mda.contract import DeliveryContract
from mda.dataread import DataResult
from mda.spool import Spool
from mda.state import state_dir
from mda.statestore import Database, StateError, open_database, owner_is_dead, owner_token
from mda.trace import header_fields
from mda.transaction import Outcome, Transaction

DB_NAME = "duplicates.sqlite"
PENDING_LEASE = 120.0
"""Seconds after which a pending claim no longer holds back another delivery of the same message (its
owner is presumed dead). Longer than a delivery takes; shorter than an MX's first retry (Postfix: 300s)."""
PRUNE_INTERVAL = 60.0
BUSY = replies.Reply(451, "4.3.0", "The same message is being delivered by another session, try again later")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mda_duplicates (message_id TEXT NOT NULL, recipient TEXT NOT NULL,"
    " state TEXT NOT NULL, owner TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (message_id, recipient))",
    "CREATE INDEX IF NOT EXISTS mda_duplicates_at ON mda_duplicates (at)",
)
_CLAIM = (
    "INSERT INTO mda_duplicates (message_id, recipient, state, owner, at)"
    " VALUES (:message_id, :recipient, 'pending', :owner, :now)"
    " ON CONFLICT (message_id, recipient) DO UPDATE"
    " SET state = 'pending', owner = excluded.owner, at = excluded.at"
    " WHERE (mda_duplicates.state = 'committed' AND mda_duplicates.at < :expired)"
    " OR (mda_duplicates.state = 'pending' AND mda_duplicates.at < :lease_expired)"
    " RETURNING owner"
)
_READ = "SELECT state, owner FROM mda_duplicates WHERE message_id = :message_id AND recipient = :recipient"
_TAKE_OVER = (
    "UPDATE mda_duplicates SET owner = :owner, at = :now"
    " WHERE message_id = :message_id AND recipient = :recipient AND state = 'pending' AND owner = :dead"
    " RETURNING owner"
)
_COMMIT = (
    "UPDATE mda_duplicates SET state = 'committed', at = :now"
    " WHERE message_id = :message_id AND recipient = :recipient AND owner = :owner"
)
_RELEASE = (
    "DELETE FROM mda_duplicates"
    " WHERE message_id = :message_id AND recipient = :recipient AND owner = :owner AND state = 'pending'"
)
_PRUNE = "DELETE FROM mda_duplicates WHERE at < :expired"

CLAIMED, DUPLICATE, HELD = "claimed", "duplicate", "held"


def message_id(header_section: bytes) -> str | None:
    """The first ``Message-ID`` value, without surrounding space; None when absent or empty."""
    values = header_fields(header_section, b"Message-ID")
    if not values:
        return None
    text = values[0].decode("utf-8", "replace").strip()
    return text or None


@dataclass
class DuplicateLog:
    """Claims and commits of ``(Message-ID, recipient)`` records in one database (``recipient`` is a
    ``Resolution.key``: the address as the policy compares it)."""

    db: Database
    window: float
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=owner_token)

    def claim(self, msgid: str, recipient: str) -> str:
        """``CLAIMED`` (deliver, then :meth:`commit` or :meth:`release`), ``DUPLICATE`` (a committed copy
        within the window) or ``HELD`` (another live delivery holds it). Raises :class:`StateError`."""
        self.db.prepare(SCHEMA)
        now = self.clock()
        key = {"message_id": msgid, "recipient": recipient, "owner": self.owner, "now": now}
        for _ in range(3):  # the row may change between statements; each round is atomic on its own
            _, rows = self.db.run(_CLAIM, {**key, "expired": now - self.window, "lease_expired": now - PENDING_LEASE})
            if rows:
                return CLAIMED
            _, rows = self.db.run(_READ, key)
            if not rows:
                continue  # released meanwhile: claim again
            state, holder = rows[0]
            if state == "committed":
                return DUPLICATE
            if not owner_is_dead(holder):
                return HELD
            _, rows = self.db.run(_TAKE_OVER, {**key, "dead": holder})
            if rows:
                return CLAIMED
        return HELD

    def commit(self, msgid: str, recipient: str) -> None:
        """The copy is stored: from now on the record suppresses."""
        now = self.clock()
        self.db.run(_COMMIT, {"message_id": msgid, "recipient": recipient, "owner": self.owner, "now": now})
        self._prune(now)

    def release(self, msgid: str, recipient: str) -> None:
        """The copy was not stored: the next attempt must not be held back."""
        self.db.run(_RELEASE, {"message_id": msgid, "recipient": recipient, "owner": self.owner})

    def _prune(self, now: float) -> None:
        database_pruned = _pruned.get(self.db.label, 0.0)
        if now - database_pruned >= PRUNE_INTERVAL:
            _pruned[self.db.label] = now
            self.db.run(_PRUNE, {"expired": now - max(self.window, PENDING_LEASE)})


_pruned: dict[str, float] = {}


def _log_failure(txn: Transaction, action: str, error: Exception) -> None:
    logs.event(
        "state_error", logging.WARNING, queue_id=txn.queue_id, record="duplicate", action=action, error=str(error)
    )


Work = Callable[[Config, Transaction, Spool, DataResult], list[Outcome]]


def suppress_duplicates(contract: DeliveryContract) -> Work:
    """Wrap the contract's fan-out: recipients already served this Message-ID are answered ``250``
    without a new copy, those another session is delivering ``451 4.3.0``; the others go through the
    fan-out and their records are then committed (stored) or released (not stored).

    The outcomes are per recipient; the contract settles them (SMTP's single reply, RFC 5321 §3.3, is
    then ``451`` for all when one recipient is held: the retry finds the stored ones committed).
    """
    work = contract.fan_out

    def run(config: Config, txn: Transaction, spool: Spool, data: DataResult) -> list[Outcome]:
        msgid = message_id(spool.header_section()) if config.duplicate_window > 0 else None
        if msgid is None:
            return work(config, txn, spool, data)
        status: dict[str, str] = {}
        claimed: list[str] = []
        try:
            log = DuplicateLog(open_database(config.state, state_dir(config), DB_NAME), config.duplicate_window)
            for resolution in txn.recipients:
                if resolution.key not in status:
                    status[resolution.key] = log.claim(msgid, resolution.key)
                    if status[resolution.key] == CLAIMED:
                        claimed.append(resolution.key)
        except StateError as error:  # deliver without suppression: at worst a duplicate, never a loss
            _log_failure(txn, "claim", error)
            if claimed:
                _release(log, txn, msgid, claimed)
            return work(config, txn, spool, data)
        fresh = [r for r in txn.recipients if status[r.key] == CLAIMED]
        try:
            outcomes = work(config, replace(txn, recipients=fresh), spool, data) if fresh else []
        except BaseException:
            _release(log, txn, msgid, claimed)
            raise
        stored = {o.resolution.key for o in outcomes if o.reply.is_success}
        for key in claimed:
            try:
                if key in stored:
                    log.commit(msgid, key)
                else:
                    log.release(msgid, key)
            except StateError as error:  # a pending record stops counting after its lease
                _log_failure(txn, "commit" if key in stored else "release", error)
        return _merge(contract, txn, outcomes, status)

    return run


def _release(log: DuplicateLog, txn: Transaction, msgid: str, keys: list[str]) -> None:
    for key in keys:
        try:
            log.release(msgid, key)
        except StateError as error:
            _log_failure(txn, "release", error)


def _merge(
    contract: DeliveryContract, txn: Transaction, outcomes: list[Outcome], status: dict[str, str]
) -> list[Outcome]:
    """One outcome per recipient in order: delivered ones as the fan-out answered, the others from their
    record's status."""
    by_key = {o.resolution.key: o for o in outcomes}
    merged = []
    for recipient in txn.recipients:
        outcome = by_key.get(recipient.key)
        if outcome is not None:
            merged.append(outcome if outcome.recipient is recipient else replace(outcome, recipient=recipient))
        elif status.get(recipient.key) == HELD:
            merged.append(Outcome(recipient, BUSY, reason="same Message-ID being delivered by another session"))
        else:
            reply = contract.saved(txn, recipient, "(duplicate, not stored again)")
            merged.append(Outcome(recipient, reply, reason="duplicate Message-ID within duplicate_window"))
    return merged
