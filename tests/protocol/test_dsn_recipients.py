"""DSN parameters as one record per recipient (RFC 3461 §4.1, §4.2), through real sockets.

``NOTIFY`` and ``ORCPT`` are checked once, at RCPT, and travel with their recipient to the trace block and
the success report. An ``ORCPT`` whose decoded address holds control characters (CR and LF included),
is not UTF-8, or is not a ``local@domain`` mailbox for the ``rfc822`` type, is refused ``501 5.5.4``.
"""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.clients import Client
from tests.conftest import basic_config

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


def _maildir(root: Path, user: str) -> list[Path]:
    return sorted((root / "example.test" / user / "Maildir" / "new").glob("*"))


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


class _Sink:
    """An SMTP server standing in for the submission path: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.content)  # type: ignore[attr-defined]
        self.arrived.set()
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[tuple[_Sink, int]]:
    handler = _Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def _status(content: bytes) -> str:
    report = email.message_from_bytes(content)
    assert report.get_content_type() == "multipart/report"
    return report.get_payload()[1].as_string()


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
    [content] = handler.messages
    status = _status(content)
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
    [content] = handler.messages
    status = _status(content)
    assert "Final-Recipient: rfc822; alice@example.test" in status
    assert "Original-Recipient: rfc822; a@orig.test" in status
    assert "Final-Recipient: rfc822; carol@example.test" in status
    assert "bob@" not in status
