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
    envelope: Envelope, txn: Transaction, spool: Spool, outcomes: Sequence[Outcome], *, lmtp: bool, hostname: str
) -> bytes | None:
    """The report to send to the envelope sender, or None when nobody asked for one that was delivered.
    In SMTP the single reply is every recipient's outcome."""
    config = envelope.context.config
    shared = outcomes[0].reply.is_success if outcomes else False
    delivered = []
    for index, (resolution, params) in enumerate(zip(envelope.recipients, envelope.rcpt_params, strict=True)):
        ok = (outcomes[index].reply.is_success if index < len(outcomes) else False) if lmtp else shared
        if not ok or "SUCCESS" not in dsn.check_notify(params.get("NOTIFY", "FAILURE")):
            continue
        original_type, original = dsn.check_orcpt(params["ORCPT"]) if "ORCPT" in params else ("rfc822", None)
        delivered.append(dsn.DeliveredRecipient(resolution.address, original, original_type))
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
