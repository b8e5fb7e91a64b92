"""Log lines: ``key=value`` by default, JSON on request, one line per recipient outcome."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mda import logs
from tests.conftest import basic_config
from tests.ops.helpers import deliver
from tests.waiting import wait_for, wait_for_async


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    logs.flush()
    logs.logger.handlers[:] = []


def _capture(stream: io.StringIO, log_format: str, level: str = "info") -> None:
    logs.setup(log_format, level, stream=stream)


def _written(stream: io.StringIO) -> str:
    """What reached the stream once the writer thread has written every pending line."""
    logs.flush()
    return stream.getvalue()


def test_text_lines_quote_and_escape(captured: io.StringIO) -> None:
    _capture(captured, "text")
    logs.event("delivery", recipient="a b@example.test", reason='say "hi"', evil="x\ny=1", empty="")
    line = _written(captured)
    assert line.count("\n") == 1, "a hostile value must not forge a second line"
    assert line.startswith("level=info event=delivery ")
    assert 'recipient="a b@example.test"' in line
    assert 'reason="say \\"hi\\""' in line
    assert 'empty=""' in line
    assert "evil=x\\ny=1" in line or 'evil="x\\\\ny' in line


def test_json_lines(captured: io.StringIO) -> None:
    _capture(captured, "json")
    logs.event("delivery", logging.WARNING, queue_id="Q1", code=452, evil="x\ny")
    record = json.loads(_written(captured))
    assert record == {"level": "warning", "event": "delivery", "queue_id": "Q1", "code": 452, "evil": "x\ny"}


def test_level_filters(captured: io.StringIO) -> None:
    _capture(captured, "text", "warning")
    logs.event("chatty")
    logs.event("important", logging.WARNING)
    written = _written(captured)
    assert "chatty" not in written and "important" in written


def test_server_logs_one_json_line_per_recipient(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", log_format="json"))
    assert deliver(server.lmtp, ["alice@example.test", "bob@example.test"]) == [250, 250]
    server.stop()
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    deliveries = [r for r in records if r["event"] == "delivery"]
    assert {r["recipient"] for r in deliveries} == {"alice@example.test", "bob@example.test"}
    for record in deliveries:
        assert record["status"] == "delivered" and record["enhanced"] == "2.0.0"
        assert record["queue_id"] and record["client"] == "127.0.0.1" and record["sender"] == "sender@example.net"
        assert record["size"] > 0 and record["delay"] >= 0 and "/new/" in record["stored"]
    events = [r["event"] for r in records]
    assert "session_open" in events and "session_close" in events


class _CountingStream(io.StringIO):
    """A stream that counts the writes it receives (each is one system call on a real standard error)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_logged_on_a_loop_share_one_write() -> None:
    """A burst of INFO lines on an event loop wakes the writer once and reaches the stream in one write,
    in order, without anything flushing them."""
    stream = _CountingStream()
    logs.setup("text", "info", stream=stream)
    try:

        async def burst() -> None:
            for number in range(200):
                logs.event("delivery", number=number)
            await wait_for_async(lambda: stream.getvalue().count("\n") == 200, what="200 lines written")

        asyncio.run(burst())
        numbers = [int(line.rsplit("number=", 1)[1]) for line in stream.getvalue().splitlines()]
        assert numbers == list(range(200))
        assert stream.writes <= 2  # one batch (two when the writer wakes in the middle of the burst)
    finally:
        logs.flush()
        logs.logger.handlers[:] = []


def test_warnings_and_lines_off_a_loop_are_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only INFO lines on a loop wait for the batch: a warning, and any line logged where no loop runs
    (``mda deliver``, the storage threads), wake the writer at once and take the waiting lines along."""
    monkeypatch.setattr(logs, "LOG_WRITE_DELAY", 3600.0)
    stream = io.StringIO()
    logs.setup("text", "info", stream=stream)
    try:
        logs.event("off_loop")
        wait_for(lambda: "event=off_loop" in stream.getvalue())

        async def on_loop() -> None:
            logs.event("waits_for_the_batch")
            logs.event("urgent", logging.WARNING)
            await wait_for_async(lambda: "event=urgent" in stream.getvalue(), what="the warning written")

        asyncio.run(on_loop())
        lines = stream.getvalue().splitlines()
        assert [line.split()[1] for line in lines] == ["event=off_loop", "event=waits_for_the_batch", "event=urgent"]
    finally:
        logs.flush()
        logs.logger.handlers[:] = []


def test_a_loop_that_stopped_with_a_wake_up_pending_strands_no_line() -> None:
    """A loop closed before its scheduled wake-up ran: lines of the next loop are still written."""
    stream = io.StringIO()
    logs.setup("text", "info", stream=stream)
    try:

        async def log_and_leave() -> None:
            logs.event("first")

        asyncio.run(log_and_leave())  # closed at once: its wake-up never runs

        async def log_and_wait() -> None:
            logs.event("second")
            await wait_for_async(lambda: "event=second" in stream.getvalue(), what="the second line written")

        asyncio.run(log_and_wait())
        assert "event=first" in stream.getvalue()
    finally:
        logs.flush()
        logs.logger.handlers[:] = []
