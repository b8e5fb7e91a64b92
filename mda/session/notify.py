"""Success DSNs (RFC 3461 §5.2.2): a "delivered" report for each ``NOTIFY=SUCCESS`` recipient delivered.

Only with a ``submission`` path on a listener with ``success_dsn`` (``DSN`` is announced only then) and a
non-null sender. The report is built while the spool is open and sent in a worker thread: the client's
replies never wait for it, a failure is logged. It returns at most ``dsn_size_limit`` bytes of the
message, so a sender cannot use mda to reflect large messages to a forged address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mda import dsn

if TYPE_CHECKING:
    from mda.delivery import Outcome, Transaction
    from mda.session.core import Envelope
    from mda.spool import Spool


def success_report(
    envelope: Envelope, txn: Transaction, spool: Spool, outcomes: Sequence[Outcome], *, hostname: str
) -> bytes | None:
    """The report to send to the envelope sender, or None when nobody asked for one that was delivered.
    Each outcome carries its recipient's DSN parameters and the reply that recipient got (in SMTP the
    single reply, mda/contract.py)."""
    config = envelope.context.config
    delivered = [
        dsn.DeliveredRecipient(outcome.recipient.address, outcome.recipient.dsn.original)
        for outcome in outcomes
        if outcome.reply.is_success and outcome.recipient.dsn.wants_success
    ]
    if not delivered:
        return None
    full = spool.read_all() if envelope.ret == "FULL" and spool.size <= config.dsn_size_limit else None
    return dsn.success_report(
        reporting_mta=hostname,
        sender=envelope.sender,
        recipients=delivered,
        envid=envelope.envid,
        ret=envelope.ret,
        queue_id=txn.queue_id,
        header_section=spool.header_section(),
        full_message=full,
        size_limit=config.dsn_size_limit,
    )
