"""Hostile input on every path: each gets its refusal and the server keeps serving other clients."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.clients import Client
from tests.conftest import basic_config
from tests.waiting import wait_for


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _quick_config(root: Path, **limits: object) -> dict[str, object]:
    """Short timeouts; one process, the one whose descriptors are counted."""
    return basic_config(root, workers=1, limits={"command_timeout": "1s", "data_timeout": "2s", **limits})


def test_megabyte_command_line_nul_and_bad_utf8(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        reply = client.cmd(b"NOOP " + b"x" * 1024 * 1024)
        assert (reply.code, reply.enhanced) == (500, "5.5.2")
        assert client.cmd("NOOP").code == 250
        assert client.cmd(b"NO\x00OP").code == 500
        assert client.cmd(b"NOOP\rRSET").code == 500
        reply = client.cmd(b"MAIL FROM:<\xff\xfe@remote.test>")
        assert (reply.code, reply.enhanced) == (500, "5.5.2")
        reply = client.cmd(b"MAIL FROM:<\xff\xfe@remote.test> SMTPUTF8")
        assert (reply.code, reply.enhanced) == (500, "5.5.2")
        reply = client.cmd("MAIL FROM:<j\u00f6rg@remote.test>".encode())
        assert (reply.code, reply.enhanced) == (553, "5.6.7")
        assert client.cmd("MAIL FROM:<j\u00f6rg@remote.test> SMTPUTF8".encode()).code == 250


def test_unknown_command_loop_is_closed_with_421(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        codes = [client.cmd(f"XYZZY {i}").code for i in range(19)]
        assert set(codes) == {500}
        reply = client.cmd("XYZZY last")
        assert (reply.code, reply.enhanced) == (421, "4.7.0")
        assert client.is_closed()
    with Client(server.smtp) as other:
        assert other.cmd("EHLO still.serving").code == 250


def test_overlong_and_malformed_lines_count_toward_the_421(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        bad = [b"NOOP " + b"x" * 5000, b"NO\x00OP", b"XYZZY", b"N\xc3OOP"] * 5
        replies = [client.cmd(line) for line in bad[:19]]
        assert {(r.code, r.enhanced) for r in replies} == {(500, "5.5.2"), (500, "5.5.1")}
        reply = client.cmd(bad[19])
        assert (reply.code, reply.enhanced) == (421, "4.7.0")
        assert client.is_closed()


def test_pipelined_flood_gets_one_reply_per_command(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        # 1000 NOOPs: within an LMTP listener's junk_command_limit (README, "Error limits").
        client.send(b"NOOP\r\n" * 1000 + b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        codes = [client.read_reply().code for _ in range(1002)]
        assert codes == [250] * 1002
        assert client.data(b"Subject: flood\r\n\r\nok\r\n")[0].code == 250


def test_huge_header_and_bare_newlines_per_recipient(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        header = b"".join(b"X-Filler-%d: value\r\n" % i for i in range(100_000))
        replies = client.data(header + b"\r\nbody\r\n")
        assert replies[0].code in (250, 552, 554), replies
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        client.cmd("RCPT TO:<bob@example.test>")
        assert client.cmd("DATA").code == 354
        client.send(b"Subject: bare\r\n\r\nbare\nLF and\rCR\r\n.\r\n")
        replies = [client.read_reply() for _ in range(2)]
        assert [(r.code, r.enhanced) for r in replies] == [(550, "5.6.0")] * 2
        assert client.cmd("NOOP").code == 250
    assert _files(root / "example.test" / "bob") == []


def test_silent_and_trickling_clients_time_out(start_mda, tmp_path):
    server = start_mda(_quick_config(tmp_path / "mail"))
    started = time.monotonic()
    with Client(server.smtp) as silent:
        reply = silent.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert time.monotonic() - started < 4
    with Client(server.smtp) as trickle:
        started = time.monotonic()
        closed = False
        for byte in b"EHLO slow.client.example\r\n":
            try:
                trickle.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.25)
            if time.monotonic() - started > 3:
                break
        reply = trickle.read_reply() if not closed else None
        assert reply is None or reply.code == 421
    with Client(server.smtp) as other:
        assert other.cmd("EHLO fine.client").code == 250


def test_each_command_restarts_the_timeout_and_silence_after_the_last_one_ends_the_session(start_mda, tmp_path):
    server = start_mda(_quick_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        for _ in range(5):  # 2 s of activity with a 1 s command_timeout
            assert client.cmd("NOOP").code == 250
            time.sleep(0.4)
        last = time.monotonic()
        assert client.cmd("NOOP").code == 250
        reply = client.read_reply()
        waited = time.monotonic() - last
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert 0.9 <= waited < 3


def _ready_for_data(address: tuple[str, int]) -> Client:
    """A session with one accepted recipient, ready for DATA or BDAT."""
    client = Client(address, timeout=10)
    client.cmd("LHLO client.test")
    client.cmd("MAIL FROM:<s@remote.test>")
    client.cmd("RCPT TO:<alice@example.test>")
    return client


def test_vanishing_mid_data_leaves_no_file_or_descriptor(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(_quick_config(root))
    with Client(server.lmtp) as warm:
        warm.cmd("LHLO client.test")
    server.wait_for_log("event=session_close")  # the warm-up session's descriptors are released
    before = _fds(server.process.pid)
    for size in (100, 300_000, 2_000_000):  # in memory, spilled to a spool file, and larger
        client = _ready_for_data(server.lmtp)
        sock = client.sock
        assert client.cmd("DATA").code == 354
        client.send(b"Subject: gone\r\n\r\n" + b"y" * size)
        sock.close()
    client = _ready_for_data(server.lmtp)
    sock = client.sock
    client.send(b"BDAT 100000\r\n" + b"z" * 5000)
    sock.close()
    wait_for(
        lambda: _fds(server.process.pid) <= before,
        5,
        what=f"at most {before} open descriptors",
        describe=lambda: _fds(server.process.pid),
    )
    assert _files(root) == []
    with Client(server.lmtp) as other:
        assert other.cmd("LHLO still.here").code == 250
