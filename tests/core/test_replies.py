"""The one table from failures to replies (README, "What each reply means"): temporary stays 4xx, permanent 5xx."""

from __future__ import annotations

import errno
import time

import pytest

from mda import replies
from mda.delivery import Recipient, Transaction, failure_outcomes
from mda.policy import Resolution
from mda.replies import DeliveryError, Reply, reply_for_error
from mda.trace import TraceInfo


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), (452, "4.3.1")),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), (552, "5.2.2")),
        (OSError(errno.EFBIG, "File too large"), (552, "5.2.2")),
        (OSError(errno.EACCES, "Permission denied"), (451, "4.3.0")),
        (OSError(errno.EROFS, "Read-only file system"), (451, "4.3.0")),
        (OSError(errno.EAGAIN, "Resource temporarily unavailable"), (450, "4.2.0")),
        (OSError(errno.EIO, "Input/output error"), (451, "4.3.0")),
        (ValueError("anything else"), (451, "4.3.0")),
        (DeliveryError(replies.MAILBOX_FULL_TEMPORARY, "quota"), (452, "4.2.2")),
    ],
)
def test_error_table(error: BaseException, expected: tuple[int, str]) -> None:
    reply = reply_for_error(error)
    assert (reply.code, reply.enhanced) == expected
    assert reply.is_temporary == (expected[0] < 500)
    assert "/" not in reply.text and "Errno" not in reply.text


def test_a_failure_escaping_delivery_is_answered_through_the_same_table() -> None:
    resolution = Resolution(replies.RECIPIENT_OK, "alice@example.test", "alice@example.test")
    txn = Transaction(
        queue_id="Q",
        sender="s@remote.test",
        recipients=[Recipient(resolution), Recipient(resolution)],
        trace=TraceInfo("s@remote.test", "client.test", "127.0.0.1", "mx.example.test", "LMTP", "Q", time.time()),
    )
    outcomes = failure_outcomes(txn, OSError(errno.ENOSPC, "No space left on device: '/var/mail/x'"))
    assert [o.reply for o in outcomes] == [replies.DISK_FULL, replies.DISK_FULL]
    assert all(isinstance(o.reply, Reply) and "/var/mail" in o.reason for o in outcomes)
