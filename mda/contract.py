"""What a protocol promises about one message's outcome: a ``DeliveryContract``.

LMTP answers each accepted RCPT on its own after the data (RFC 2033 §4.2): one recipient's failure is
that recipient's alone. SMTP answers the transaction once (RFC 5321 §3.3): every copy is stored or none
is, and every recipient shares the one reply. The session chooses its contract once, from the
listener's protocol (``mda.delivery.contract_for``); everything after it — the fan-out, duplicate
suppression, the replies on the wire — asks the contract instead of testing a flag. The two contracts,
``mda.delivery.LMTP`` and ``mda.delivery.SMTP``, are these classes given their fan-out
(docs/architecture.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mda import replies
from mda.enums import Protocol
from mda.replies import Reply
from mda.transaction import Outcome, Recipient, Transaction

if TYPE_CHECKING:
    from mda.config import Config
    from mda.dataread import DataResult
    from mda.spool import Spool


FanOut = Callable[["Config", Transaction, "Spool", "DataResult"], list[Outcome]]
"""Stores the copies (blocking): one outcome per recipient of the transaction, in order."""


class DeliveryContract(ABC):
    """How one received message is delivered and answered: per recipient, or all or nothing."""

    def __init__(self, protocol: Protocol, fan_out: FanOut) -> None:
        self.protocol = protocol
        """The listener protocol this contract belongs to."""
        self.fan_out = fan_out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.protocol}>"

    @abstractmethod
    def saved(self, txn: Transaction, recipient: Recipient, note: str = "") -> Reply:
        """The ``250`` of a stored recipient; ``note`` says more where the reply is that recipient's own."""

    @abstractmethod
    def settle(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes as the client is told them: each recipient its own, or one reply for all."""

    @abstractmethod
    def replies(self, lines: Sequence[Reply]) -> list[Reply]:
        """The reply lines written after the data, from one reply per accepted recipient."""


class PerRecipientReplies(DeliveryContract):
    """LMTP: every recipient's outcome is its own, one reply line each, in RCPT order."""

    def saved(self, txn: Transaction, recipient: Recipient, note: str = "") -> Reply:
        return replies.saved(txn.queue_id, recipient.address, note)

    def settle(self, outcomes: list[Outcome]) -> list[Outcome]:
        return outcomes

    def replies(self, lines: Sequence[Reply]) -> list[Reply]:
        return list(lines)


class SingleReply(DeliveryContract):
    """SMTP: one reply for the whole transaction, shared by every recipient's outcome."""

    def saved(self, txn: Transaction, recipient: Recipient, note: str = "") -> Reply:
        return replies.saved(txn.queue_id)

    def settle(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The first temporary failure (the client retries, and finds the stored copies committed),
        else the first permanent one, else the first success, becomes every recipient's reply."""
        if not outcomes:
            return outcomes
        failed = [o.reply for o in outcomes if not o.reply.is_success]
        temporary = [reply for reply in failed if reply.is_temporary]
        shared = temporary[0] if temporary else failed[0] if failed else outcomes[0].reply
        return [o if o.reply == shared else replace(o, reply=shared) for o in outcomes]

    def replies(self, lines: Sequence[Reply]) -> list[Reply]:
        return list(lines[:1])
