"""What one delivery takes in and gives back: the ``Transaction`` and one ``Outcome`` per recipient.

A module of its own so that the delivery layer (``mda.delivery``), duplicate suppression
(``mda.dedupe``), the sessions and LDA mode share these types without importing one another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mda.policy import Resolution
from mda.replies import Reply
from mda.storage.base import StoreResult
from mda.trace import TraceInfo


@dataclass
class Transaction:
    """One MAIL transaction as the delivery layer needs it."""

    queue_id: str
    sender: str
    recipients: list[Resolution]
    trace: TraceInfo
    started: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """The result for one accepted RCPT: its reply, where its copies went, and the logged reason."""

    resolution: Resolution
    reply: Reply
    results: list[StoreResult] = field(default_factory=list)
    reason: str = ""
    sieve_errors: list[str] = field(default_factory=list)
    """Kinds of Sieve failures in this delivery (``filtering.Plan.errors``), for the metrics."""

    @property
    def locations(self) -> str:
        return ",".join(result.location for result in self.results)
