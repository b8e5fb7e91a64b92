"""LMTP end to end: real server, real sockets, files read back with the standard library."""

from __future__ import annotations

import mailbox
import re
import socket
from pathlib import Path

from tests.clients import Client, transaction
from tests.conftest import basic_config

MESSAGE = (
    b"From: Sender <sender@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: caf\xc3\xa9 8-bit\r\n"
    b"Return-Path: <forged@evil.test>\r\n"
    b"Message-ID: <m1@remote.test>\r\n"
    b"\r\n"
    b".leading dot line\r\n"
    b"..two dots\r\n"
    b"8-bit body: \xe2\x82\xac \xff\r\n"
    b"last line\r\n"
)
STORED_BODY = b".leading dot line\n..two dots\n8-bit body: \xe2\x82\xac \xff\nlast line\n"


def block_maildir(root: Path, user: str) -> None:
    """Put a file where ``user``'s mailbox directory should be: every delivery to it fails (ENOTDIR)."""
    (root / "example.test").mkdir(parents=True)
    (root / "example.test" / user).write_text("a file where a directory should be")


def maildir_files(root: Path, user: str, domain: str = "example.test") -> list[Path]:
    new = root / domain / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_three_recipients_one_unknown_gets_two_replies_and_two_files(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        assert client.greeting.code == 220
        assert client.cmd("LHLO client.test").code == 250
        rcpt, data = transaction(
            client, "sender@remote.test", ["alice@example.test", "nobody@example.test", "bob@example.test"], MESSAGE
        )
        assert [r.code for r in rcpt] == [250, 550, 250]
        assert rcpt[1].enhanced == "5.1.1"
        assert [d.code for d in data] == [250, 250]
        assert all(d.enhanced == "2.0.0" for d in data)
        assert "alice@example.test" in data[0].text and "bob@example.test" in data[1].text
        assert client.cmd("NOOP").code == 250
    assert len(maildir_files(tmp_path / "mail", "alice")) == 1
    assert len(maildir_files(tmp_path / "mail", "bob")) == 1
    assert not (tmp_path / "mail" / "example.test" / "nobody").exists()


def test_stored_message_is_byte_exact_with_trace_headers_first(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _, data = transaction(client, "sender@remote.test", ["alice@example.test"], MESSAGE)
        queue_id = data[0].text.split()[2]
    [path] = maildir_files(tmp_path / "mail", "alice")
    stored = path.read_bytes()
    lines = stored.split(b"\n")
    assert lines[0] == b"Return-Path: <sender@remote.test>"
    assert lines[1] == b"Delivered-To: alice@example.test"
    assert lines[2] == b"Received: from client.test ([127.0.0.1])"
    assert lines[3] == f"\tby mx.example.test with LMTP id {queue_id}".encode()
    assert re.fullmatch(rb"\tfor <alice@example\.test>; \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", lines[4])
    assert b"forged@evil.test" not in stored
    original_headers = (
        MESSAGE.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n").replace(b"Return-Path: <forged@evil.test>\n", b"")
    )
    assert stored.split(b"\n", 5)[5].startswith(original_headers + b"\n\n")
    assert stored.endswith(b"\n\n" + STORED_BODY)
    assert b"\r" not in stored
    size = len(stored)
    vsize = size + stored.count(b"\n")
    assert f",S={size},W={vsize}" in path.name

    box = mailbox.Maildir(tmp_path / "mail" / "example.test" / "alice" / "Maildir", create=False)
    [message] = list(box)
    assert message["Subject"] is not None
    assert message.get_payload(decode=True) == STORED_BODY


def test_same_recipient_twice_two_replies_one_copy(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        rcpt, data = transaction(client, "s@remote.test", ["alice@example.test", "ALICE@example.test"], MESSAGE)
        assert [r.code for r in rcpt] == [250, 250]
        assert [d.code for d in data] == [250, 250]
    assert len(maildir_files(tmp_path / "mail", "alice")) == 1


def test_data_without_accepted_recipient_is_503_and_reads_no_data(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        assert client.cmd("RCPT TO:<nobody@example.test>").code == 550
        reply = client.cmd("DATA")
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        assert client.cmd("RSET").code == 250


def test_storage_failure_for_one_recipient_fails_only_that_one(start_mda, tmp_path):
    root = tmp_path / "mail"
    block_maildir(root, "bob")
    server = start_mda(basic_config(root))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _, data = transaction(client, "s@remote.test", ["alice@example.test", "bob@example.test"], MESSAGE)
        assert data[0].code == 250
        assert (data[1].code, data[1].enhanced) == (451, "4.3.0")
        assert "/" not in data[1].text and "Errno" not in data[1].text
        assert client.cmd("NOOP").code == 250
    assert len(maildir_files(root, "alice")) == 1
    assert "Not a directory" in server.wait_for_log("Not a directory")


def test_lmtp_refuses_helo_and_ehlo_and_announces_extensions(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        assert client.cmd("HELO client.test").code == 500
        assert client.cmd("EHLO client.test").code == 500
        assert client.cmd("MAIL FROM:<s@remote.test>").code == 503
        lhlo = client.cmd("LHLO client.test")
        assert lhlo.code == 250
        keywords = {line.split()[0] for line in lhlo.lines[1:]}
        assert {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE"} <= keywords
        assert (client.cmd("VRFY alice").code, client.cmd("VRFY alice").enhanced) == (252, "2.5.0")
        assert (client.cmd("EXPN list").code, client.cmd("EXPN list").enhanced) == (502, "5.5.1")
        assert client.cmd("BOGUS").enhanced == "5.5.1"
        assert client.cmd("QUIT").code == 221


def test_pipelined_transaction_gets_replies_in_order(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.send(
            b"LHLO client.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            b"RCPT TO:<x@elsewhere.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        codes = [client.read_reply().code for _ in range(6)]
        assert codes == [250, 250, 250, 550, 250, 354]
        client.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert [client.read_reply().code for _ in range(3)] == [250, 250, 221]


def test_unix_socket_listener(start_mda, tmp_path):
    socket_path = tmp_path / "run" / "lmtp.sock"
    config = basic_config(
        tmp_path / "mail",
        listeners=[{"protocol": "lmtp", "bind": f"unix:{socket_path}", "socket_mode": "0660"}],
    )
    server = start_mda(config)
    assert server.unix["lmtp"] == [str(socket_path)]
    assert (socket_path.stat().st_mode & 0o777) == 0o660
    with Client(str(socket_path)) as client:
        client.cmd("LHLO client.test")
        _, data = transaction(client, "s@remote.test", ["carol@example.test"], MESSAGE)
        assert data[0].code == 250
    [path] = maildir_files(tmp_path / "mail", "carol")
    assert b"Received: from client.test (localhost)" in path.read_bytes()


def test_second_instance_cannot_steal_a_live_unix_socket(start_mda, tmp_path):
    socket_path = tmp_path / "lmtp.sock"
    config = basic_config(tmp_path / "mail", listeners=[{"protocol": "lmtp", "bind": f"unix:{socket_path}"}])
    start_mda(config)
    try:
        start_mda(config)
    except RuntimeError as error:
        assert "in use" in str(error)
    else:
        raise AssertionError("a second server took over a live socket")
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(str(socket_path))
    assert probe.recv(100).startswith(b"220 ")
    probe.close()


def test_each_delivery_logs_one_line(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _, data = transaction(client, "s@remote.test", ["alice@example.test", "bob@example.test"], MESSAGE)
        queue_id = data[0].text.split()[2]
    server.stop()
    lines = [line for line in server.log().splitlines() if "event=delivery" in line]
    assert len(lines) == 2
    for line, user in zip(lines, ("alice", "bob"), strict=True):
        assert f"queue_id={queue_id}" in line
        assert "sender=s@remote.test" in line
        assert f"recipient={user}@example.test" in line
        assert "status=delivered" in line and "enhanced=2.0.0" in line
        assert re.search(r"size=\d+", line)
        assert f"/{user}/Maildir/new/" in line
