"""CHUNKING/BDAT (RFC 3030), DSN parameters and success reports (RFC 3461, 3464), PROXY v1/v2."""

from __future__ import annotations

import email
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.clients import Client
from tests.conftest import basic_config

BODY = b"Subject: chunks\r\n\r\n.leading dot stays\r\nline two\r\n"


def _maildir(root: Path, user: str) -> list[Path]:
    return sorted((root / "example.test" / user / "Maildir" / "new").glob("*"))


def _body(path: Path) -> bytes:
    return path.read_bytes().split(b"\nSubject: ", 1)[1]


def _chunk(client: Client, payload: bytes, *, last: bool = False) -> object:
    client.send(f"BDAT {len(payload)}{' LAST' if last else ''}\r\n".encode() + payload)
    return client.read_reply()


def test_bdat_chunks_lmtp_per_recipient_and_pipelined(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.lmtp) as client:
        assert "CHUNKING" in client.cmd("LHLO client.test").lines
        first, second = BODY[:20], BODY[20:]
        # Everything pipelined in one write, the CRLF of the first line split between chunks.
        client.send(
            b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            + f"BDAT {len(first)}\r\n".encode()
            + first
            + f"BDAT {len(second)} LAST\r\n".encode()
            + second
        )
        codes = [client.read_reply().code for _ in range(7)]
        assert codes == [250, 250, 550, 250, 250, 250, 250]
        assert client.cmd("NOOP").code == 250
    for user in ("alice", "bob"):
        stored = _maildir(root, user)[0].read_bytes()
        assert stored.endswith(b"Subject: chunks\n\n.leading dot stays\nline two\n")
        assert b"with LMTP id" in stored


def test_bdat_zero_last_refusals_and_bare_newlines(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        reply = _chunk(client, b"hello")  # no MAIL: the chunk is read and refused
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        assert client.cmd("BDAT x").code == 501
        assert client.cmd("BDAT 1 MORE").code == 501
        reply = client.cmd("BDAT 12345678901234 LAST")  # more digits than any chunk: syntax, nothing read
        assert (reply.code, reply.enhanced) == (501, "5.5.4")
        client.cmd("MAIL FROM:<s@remote.test>")
        reply = client.cmd("MAIL FROM:<other@remote.test>")
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        reply = _chunk(client, b"no recipient yet")  # read and refused; the session stays in step
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        client.cmd("RCPT TO:<alice@example.test>")
        assert _chunk(client, BODY).code == 250
        reply = client.cmd("RCPT TO:<bob@example.test>")
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        reply = client.cmd("DATA")
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        reply = client.cmd("BDAT 0 last")
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<bob@example.test>")
        bare = b"Subject: x\r\n\r\nbare\nLF\r\n"
        reply = _chunk(client, bare, last=True)
        assert (reply.code, reply.enhanced) == (550, "5.6.0")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<bob@example.test>")
        _chunk(client, b"abc")
        assert client.cmd("RSET").code == 250
        assert client.cmd("NOOP").code == 250
    assert _body(_maildir(root, "alice")[0]) == b"chunks\n\n.leading dot stays\nline two\n"
    assert _maildir(root, "bob") == []


def test_bdat_over_size_limit(start_mda, tmp_path):
    root = tmp_path / "mail"
    config = basic_config(root, limits={"max_message_size": "1K"})
    server = start_mda(config)
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        big = b"x" * 3000
        assert _chunk(client, big).code == 250
        reply = client.cmd("BDAT 0 LAST")
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
        assert client.cmd("NOOP").code == 250
    assert _maildir(root, "alice") == []


def test_bdat_last_in_flight_is_answered_then_421_on_shutdown(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, shutdown_timeout="60s"))
    with Client(server.lmtp, timeout=5) as client:  # the 421 comes with the replies, not at the deadline
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        client.cmd("RCPT TO:<bob@example.test>")
        client.send(f"BDAT {len(BODY)} LAST\r\n".encode() + BODY[:10])
        server.wait_for_log("session_open")
        server.signal(signal.SIGTERM)
        server.wait_for_log("event=stopping")
        client.send(BODY[10:])
        replies = [client.read_reply() for _ in range(3)]
        assert [(r.code, r.enhanced) for r in replies] == [(250, "2.0.0"), (250, "2.0.0"), (421, "4.3.2")]
        assert client.is_closed()
    assert server.process.wait(10) == 0
    assert len(_maildir(root, "alice")) == len(_maildir(root, "bob")) == 1


class _Sink:
    """A tiny aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.arrived.set()
        return "250 OK"


def test_dsn_parameters_stored_per_recipient_and_success_report(start_mda, tmp_path):
    sink = _Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        root = tmp_path / "mail"
        server = start_mda(basic_config(root, submission={"host": "127.0.0.1", "port": port}))
        with Client(server.lmtp) as client:
            assert "DSN" in client.cmd("LHLO client.test").lines
            assert client.cmd("MAIL FROM:<s@remote.test> RET=HDRS ENVID=QQ+2Bid").code == 250
            rcpt = "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@orig.test"
            assert client.cmd(rcpt).code == 250
            assert client.cmd("RCPT TO:<bob@example.test> NOTIFY=NEVER ORCPT=rfc822;b@orig.test").code == 250
            assert client.cmd("RCPT TO:<carol@example.test>").code == 250
            replies = client.data(b"Subject: dsn\r\n\r\nhello\r\n", replies=3)
            assert [r.code for r in replies] == [250, 250, 250]
        assert sink.arrived.wait(20)
        sender, recipients, content = sink.messages[0]
        assert sender == "<>" and recipients == ["s@remote.test"]
        report = email.message_from_bytes(content)
        assert report.get_content_type() == "multipart/report"
        status = report.get_payload()[1].as_string()
        assert "Final-Recipient: rfc822; alice@example.test" in status
        assert "Original-Recipient: rfc822; a+2Bx@orig.test" in status
        assert "Original-Envelope-Id: QQ+2Bid" in status
        assert "bob@" not in status and "carol@" not in status
        assert "Action: delivered" in status
        alice = _maildir(root, "alice")[0].read_bytes()
        assert alice.index(b"Delivered-To: alice@example.test\nX-Original-To: a+x@orig.test\nReceived:") > 0
        assert b"X-Original-To: b@orig.test" in _maildir(root, "bob")[0].read_bytes()
        assert b"X-Original-To" not in _maildir(root, "carol")[0].read_bytes()
        # One report for the transaction, never one per recipient: once mda has exited (its thread pool
        # drained on shutdown), every submission it made has been answered by the sink.
        assert server.stop() == 0
        assert len(sink.messages) == 1
    finally:
        controller.stop()


@pytest.fixture
def sink() -> Iterator[tuple[_Sink, int]]:
    """An SMTP server standing in for the submission path: (its handler, its port)."""
    handler = _Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def _report_parts(content: bytes) -> list[email.message.Message]:
    report = email.message_from_bytes(content)
    assert report.get_content_type() == "multipart/report"
    return report.get_payload()


def _send_with_success_dsn(client: Client, message: bytes, *, envid: str = "x", ret: str = "FULL") -> None:
    assert client.cmd(f"MAIL FROM:<victim@elsewhere.test> RET={ret} ENVID={envid}").code == 250
    assert client.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS").code == 250
    assert client.data(message)[0].code == 250


def test_dsn_full_return_is_capped_to_the_header_beyond_the_size_limit(start_mda, tmp_path, sink):
    handler, port = sink
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, submission={"host": "127.0.0.1", "port": port}))
    head = b"Subject: big\r\nX-Tag: keep me\r\n\r\n"
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        _send_with_success_dsn(client, head + b"0123456789abcdef\r\n" * 60_000)  # 1 MiB of body
    assert handler.arrived.wait(20)
    content = handler.messages[0][2]
    assert len(content) <= 50_000  # the default dsn_size_limit, the whole report included
    text, _, returned = _report_parts(content)
    assert "only its header is returned" in text.get_payload()
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"X-Tag: keep me" in content and b"0123456789abcdef" not in content
    assert len(_maildir(root, "alice")[0].read_bytes()) > 1_000_000  # the delivered copy is whole


def test_dsn_size_limit_key_and_long_lines_wrapped(start_mda, tmp_path, sink):
    handler, port = sink
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, submission={"host": "127.0.0.1", "port": port}, dsn_size_limit="20K"))
    long_header = b"X-Long: " + b"h" * 2500 + b"\r\n"
    long_body = "é".encode() * 1500 + b"\r\n"  # 3000 octets of two-octet characters
    small = b"Subject: small\r\n" + long_header + b"\r\n" + long_body + b"tail line\r\n"
    large = b"Subject: large\r\n" + long_header + b"\r\n" + (b"w" * 990 + b"\r\n") * 25  # over 20K
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _send_with_success_dsn(client, small, envid="small")
        assert handler.arrived.wait(20)
        handler.arrived.clear()
        _send_with_success_dsn(client, large, envid="large")
        assert handler.arrived.wait(20)
    by_envid = {}
    for _, _, content in handler.messages:
        assert all(len(line) <= 998 for line in content.split(b"\r\n")), "a line over 998 octets"
        by_envid[b"Original-Envelope-Id: small" in content] = content
    small_report, large_report = by_envid[True], by_envid[False]
    returned = _report_parts(small_report)[2]
    assert returned.get_content_type() == "message/rfc822"
    unfolded = small_report.replace(b"\r\n ", b"")
    assert long_header.rstrip() in unfolded and long_body.rstrip() in unfolded and b"tail line" in unfolded
    assert len(large_report) <= 20 * 1024
    assert _report_parts(large_report)[2].get_content_type() == "text/rfc822-headers"
    assert b"h" * 900 in large_report and b"w" * 990 not in large_report


def test_success_dsn_off_per_listener(start_mda, tmp_path, sink):
    handler, port = sink
    root = tmp_path / "mail"
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "success_dsn": False},
        {"protocol": "smtp", "bind": "127.0.0.1:0"},
    ]
    config = basic_config(root, listeners=listeners, submission={"host": "127.0.0.1", "port": port})
    server = start_mda(config)
    with Client(server.lmtp) as client:
        assert "DSN" not in client.cmd("LHLO client.test").lines
        _send_with_success_dsn(client, b"Subject: quiet\r\n\r\nx\r\n", envid="off")  # accepted, not reported
    with Client(server.smtp) as client:
        assert "DSN" in client.cmd("EHLO client.test").lines
        _send_with_success_dsn(client, b"Subject: loud\r\n\r\nx\r\n", envid="on")
    assert handler.arrived.wait(20)
    assert len(_maildir(root, "alice")) == 2
    # A report for the first message would have been handed to the submission path before the second.
    assert [b"Original-Envelope-Id: on" in content for _, _, content in handler.messages] == [True]


def test_dsn_syntax_is_checked_and_not_announced_without_submission(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        assert "DSN" not in client.cmd("EHLO client.test").lines
        assert client.cmd("MAIL FROM:<s@remote.test> RET=BODY").code == 501
        assert client.cmd("MAIL FROM:<s@remote.test> ENVID=a=b").code == 501
        assert client.cmd("MAIL FROM:<s@remote.test> RET=FULL RET=HDRS").code == 501
        assert client.cmd("MAIL FROM:<s@remote.test> RET=FULL ENVID=x").code == 250
        for bad in ("NOTIFY=SOMETIMES", "NOTIFY=NEVER,SUCCESS", "NOTIFY=", "ORCPT=a@b", "ORCPT=rfc822;a+zz@b"):
            reply = client.cmd(f"RCPT TO:<alice@example.test> {bad}")
            assert (reply.code, reply.enhanced) == (501, "5.5.4"), bad
        assert client.cmd("RCPT TO:<alice@example.test> NOTIFY=success,delay").code == 250


# ORCPT values refused 501 5.5.4: the decoded address (RFC 3461 §4.2) goes into X-Original-To, Sieve's
# envelope and a report, so it must be UTF-8 without control characters, and local@domain for rfc822.
BAD_ORCPT = [
    "rfc822;a+0D+0AX-Injected:+20yes@orig.test",  # CR LF: a second header line in X-Original-To
    "rfc822;a+0Ab@orig.test",  # a bare LF
    "rfc822;a+00b@orig.test",  # NUL
    "rfc822;a+7Fb@orig.test",  # DEL
    "rfc822;a+C2+85b@orig.test",  # U+0085, a C1 control (NEL)
    "rfc822;+FF+FEa@orig.test",  # not UTF-8
    "rfc822;no-domain",  # not local@domain
    "rfc822;a@",
    "x-local;a+09b",  # another address type: a TAB is still a control character
    "rfc822;",  # empty
    "a@b",  # no addr-type
]


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
def test_orcpt_with_control_characters_or_no_address_is_refused(start_mda, tmp_path, protocol):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.lmtp if protocol == "lmtp" else server.smtp) as client:
        client.cmd("LHLO client.test" if protocol == "lmtp" else "EHLO client.test")
        assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
        for bad in BAD_ORCPT:
            reply = client.cmd(f"RCPT TO:<alice@example.test> ORCPT={bad}")
            assert (reply.code, reply.enhanced) == (501, "5.5.4"), bad
        # Well-formed ones still pass: a quoted local part with a space, another address type.
        assert client.cmd('RCPT TO:<alice@example.test> ORCPT=rfc822;"john+20doe"@orig.test').code == 250
        assert client.cmd("RCPT TO:<bob@example.test> ORCPT=x-local;anything-at-all").code == 250
        replies = client.data(b"Subject: orcpt\r\n\r\nhello\r\n", replies=2 if protocol == "lmtp" else 1)
        assert all(r.code == 250 for r in replies), replies
    [alice] = _maildir(root, "alice")
    head = alice.read_bytes().split(b"\n\n", 1)[0]
    assert b'Delivered-To: alice@example.test\nX-Original-To: "john doe"@orig.test\nReceived:' in head
    assert b"X-Injected" not in head
    assert b"X-Original-To: anything-at-all\n" in _maildir(root, "bob")[0].read_bytes()


def test_lmtp_same_recipient_twice_keeps_each_rcpts_own_dsn_parameters(start_mda, tmp_path, sink):
    """The same address given twice is stored once, but each RCPT keeps its own NOTIFY and ORCPT."""
    handler, port = sink
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, submission={"host": "127.0.0.1", "port": port}))
    with Client(server.lmtp) as client:
        assert "DSN" in client.cmd("LHLO client.test").lines
        assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
        assert client.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER ORCPT=rfc822;first@orig.test").code == 250
        assert client.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;second@orig.test").code == 250
        replies = client.data(b"Subject: twice\r\n\r\nhello\r\n", replies=2)
        assert [r.code for r in replies] == [250, 250]
    assert handler.arrived.wait(20)
    assert server.stop() == 0
    [(_, _, content)] = handler.messages
    status = _report_parts(content)[1].as_string()
    assert status.count("Final-Recipient: rfc822; alice@example.test") == 1
    assert "Original-Recipient: rfc822; second@orig.test" in status and "first@" not in status
    assert len(_maildir(root, "alice")) == 1


def test_smtp_success_report_lists_every_recipient_that_asked(start_mda, tmp_path, sink):
    """SMTP's single reply is every recipient's outcome: each NOTIFY=SUCCESS recipient is reported."""
    handler, port = sink
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, submission={"host": "127.0.0.1", "port": port}))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        assert client.cmd("MAIL FROM:<s@remote.test> ENVID=smtp").code == 250
        assert client.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;a@orig.test").code == 250
        assert client.cmd("RCPT TO:<bob@example.test> NOTIFY=FAILURE").code == 250
        assert client.cmd("RCPT TO:<carol@example.test> NOTIFY=SUCCESS,DELAY").code == 250
        [reply] = client.data(b"Subject: three\r\n\r\nhello\r\n")
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
    assert handler.arrived.wait(20)
    assert server.stop() == 0
    [(_, _, content)] = handler.messages
    status = _report_parts(content)[1].as_string()
    assert "Final-Recipient: rfc822; alice@example.test" in status
    assert "Original-Recipient: rfc822; a@orig.test" in status
    assert "Final-Recipient: rfc822; carol@example.test" in status
    assert "bob@" not in status


def _proxy_config(root: Path, **extra: object) -> dict[str, object]:
    return basic_config(root, listeners=[{"protocol": "lmtp", "bind": "127.0.0.1:0", "proxy_protocol": True, **extra}])


def test_proxy_v1_and_v2_client_address_in_received_and_access(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(_proxy_config(root, proxy_trusted=["127.0.0.0/8"], allow=["192.0.2.0/24", "2001:db8::/32"]))
    v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 2424\r\n"
    sock = socket.create_connection(server.lmtp, timeout=10)
    sock.sendall(v1)
    client = Client.attach(sock)
    assert client.greeting.code == 220
    client.cmd("LHLO client.test")
    client.cmd("MAIL FROM:<s@remote.test>")
    client.cmd("RCPT TO:<alice@example.test>")
    assert client.data(b"Subject: p\r\n\r\nx\r\n")[0].code == 250
    client.close()
    assert b"([192.0.2.7])" in _maildir(root, "alice")[0].read_bytes()
    # v2, IPv6 source outside no network allowed? 2001:db8::5 is allowed; 198.51.100.1 is refused.
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_pton(socket.AF_INET, "198.51.100.1") + socket.inet_pton(socket.AF_INET, "127.0.0.1")
    v2 = signature + b"\x21\x11" + struct.pack("!H", 12) + addresses + struct.pack("!HH", 40000, 2424)
    with socket.create_connection(server.lmtp, timeout=10) as raw:
        raw.sendall(v2)
        assert raw.recv(200).startswith(b"554 5.7.1")
    # No PROXY header: closed without a greeting; the listener keeps serving.
    with socket.create_connection(server.lmtp, timeout=10) as raw:
        raw.sendall(b"LHLO direct.test\r\n")
        assert raw.recv(200) == b""
    assert "192.0.2.7" in server.wait_for_log("192.0.2.7")


def test_proxy_header_missing_times_out(start_mda, tmp_path):
    server = start_mda(_proxy_config(tmp_path / "mail", proxy_trusted=["127.0.0.1"], limits={"command_timeout": "1s"}))
    started = time.monotonic()
    with socket.create_connection(server.lmtp, timeout=10) as raw:
        data = raw.recv(200)
        while data and not data.endswith(b"\n"):
            data += raw.recv(200)
    assert time.monotonic() - started < 5
    assert data in (b"", b"421 4.4.2 Timeout, closing connection\r\n")


def test_check_config_validates_dsn_keys(tmp_path):
    def check(**overrides: object) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "mda.yaml"
        path.write_text(yaml.safe_dump(basic_config(tmp_path / "mail", **overrides)))
        command = [sys.executable, "-m", "mda", "check-config", "--config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert check(dsn_size_limit="64K").returncode == 0
    listener = {"protocol": "lmtp", "bind": "127.0.0.1:0"}
    assert check(listeners=[{**listener, "success_dsn": False}]).returncode == 0
    for overrides, message in (
        ({"dsn_size_limit": 100}, "dsn_size_limit: must be at least 1K"),
        ({"dsn_size_limit": "huge"}, "dsn_size_limit: expected a size"),
        ({"listeners": [{**listener, "success_dsn": "no"}]}, "success_dsn: expected true or false"),
    ):
        result = check(**overrides)
        assert result.returncode == 1 and message in result.stderr, result.stderr
