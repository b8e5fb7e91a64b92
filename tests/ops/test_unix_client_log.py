"""Sessions over a UNIX socket have no IP address: the log names the peer process instead of ``client=""``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.ops.helpers import MESSAGE


def test_unix_socket_sessions_log_the_peer_pid_and_uid(start_mda, tmp_path: Path) -> None:
    socket_path = tmp_path / "lmtp.sock"
    listeners = [{"protocol": "lmtp", "bind": f"unix:{socket_path}"}, {"protocol": "smtp", "bind": "127.0.0.1:0"}]
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners, log_format="json"))
    with Client(str(socket_path)) as client:
        client.cmd("LHLO client.example")
        rcpt, data = transaction(client, "sender@example.net", ["alice@example.test", "nobody@example.test"], MESSAGE)
        assert [r.code for r in rcpt] == [250, 550] and [r.code for r in data] == [250]
        client.cmd("QUIT")
    server.stop()
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    expected = f"unix:pid={os.getpid()},uid={os.getuid()}"
    by_event = {record["event"]: record for record in records if "client" in record}
    for event in ("session_open", "rcpt_refused", "delivery", "session_close"):
        assert by_event[event]["client"] == expected, by_event.get(event)
