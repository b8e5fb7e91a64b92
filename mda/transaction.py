"""What one delivery takes in and gives back: the ``Transaction`` with its ``Recipient`` records, and one
``Outcome`` per recipient.

A module of its own so that the delivery layer (``mda.delivery``), duplicate suppression
(``mda.dedupe``), the sessions and LDA mode share these types without importing one another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mda.dsn import NO_DSN, RecipientDsn
from mda.policy import Resolution
from mda.replies import Reply
from mda.storage.base import StoreResult
from mda.trace import TraceInfo


@dataclass(frozen=True)
class Recipient:
    """One accepted RCPT: the policy's resolution and its DSN parameters (``NOTIFY``, ``ORCPT``), parsed and
    checked once at RCPT and carried as one record to the trace block, Sieve and the success report."""

    resolution: Resolution
    dsn: RecipientDsn = NO_DSN

    @property
    def address(self) -> str:
        return self.resolution.address

    @property
    def key(self) -> str:
        """The address as the policy compares it: the same key twice is one recipient."""
        return self.resolution.key

    @property
    def original(self) -> str | None:
        """The decoded ``ORCPT`` address, if the client gave one (RFC 3461 §4.2)."""
        return self.dsn.original.address if self.dsn.original is not None else None


@dataclass
class Transaction:
    """One MAIL transaction as the delivery layer needs it."""

    queue_id: str
    sender: str
    recipients: list[Recipient]
    trace: TraceInfo
    started: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """The result for one accepted RCPT: its reply, where its copies went, and the logged reason."""

    recipient: Recipient
    reply: Reply
    results: list[StoreResult] = field(default_factory=list)
    reason: str = ""
    sieve_errors: list[str] = field(default_factory=list)
    """Kinds of Sieve failures in this delivery (``filtering.Plan.errors``), for the metrics."""

    @property
    def resolution(self) -> Resolution:
        return self.recipient.resolution

    @property
    def locations(self) -> str:
        return ",".join(result.location for result in self.results)
