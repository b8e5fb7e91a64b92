"""The ``Received:`` date: one text per second, whatever order copies ask for it in."""

from __future__ import annotations

import email.utils

from mda.trace import TraceInfo, trace_block


def _received_date(timestamp: float) -> str:
    info = TraceInfo("s@remote.test", "client.test", "127.0.0.1", "mx.example.test", "LMTP", "Q", timestamp)
    header = trace_block(info, "rcpt@example.test").decode()
    return header.rsplit("; ", 1)[1].strip()


def test_received_date_names_the_second_of_each_copy_even_when_seconds_alternate() -> None:
    base = 1_700_000_000.0
    for timestamp in (base + 0.1, base + 0.9, base + 1.2, base + 0.5, base + 86_400.3, base + 1.0):
        text = _received_date(timestamp)
        assert email.utils.parsedate_to_datetime(text).timestamp() == int(timestamp)
        assert text == email.utils.format_datetime(email.utils.localtime(email.utils.parsedate_to_datetime(text)))
