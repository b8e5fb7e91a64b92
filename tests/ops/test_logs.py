"""Log lines: ``key=value`` by default, JSON on request, one line per recipient outcome."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mda import logs
from tests.conftest import basic_config
from tests.ops.helpers import deliver


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
