"""The header section limit (``max_header_size``, Postfix's header_size_limit): a larger header is
refused with ``552 5.3.4``, one reply per recipient in LMTP, and the session goes on."""

from __future__ import annotations

from pathlib import Path

from tests.clients import Client
from tests.conftest import basic_config

HEADER_TOO_BIG = (552, "5.3.4")
NORMAL = b"From: a@remote.test\r\nSubject: normal\r\n\r\nbody\r\n"


def _header(size: int) -> bytes:
    """A header section of about ``size`` bytes of short fields."""
    line = b"X-A: b\r\n"
    return b"Subject: big header\r\n" + line * (size // len(line))


def _stored(root: Path, user: str) -> list[bytes]:
    new = root / "example.test" / user / "Maildir" / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def _begin(client: Client, recipients: list[str]) -> None:
    assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
    for recipient in recipients:
        assert client.cmd(f"RCPT TO:<{recipient}>").code == 250


def test_lmtp_refuses_a_200k_header_per_recipient_by_data_and_bdat(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    big = _header(200 * 1024) + b"\r\nbody\r\n"
    with Client(server.lmtp) as client:
        client.cmd("LHLO mx.example.net")
        _begin(client, ["alice@example.test", "bob@example.test"])
        replies = client.data(big, replies=2)
        assert [(r.code, r.enhanced) for r in replies] == [HEADER_TOO_BIG] * 2
        assert client.cmd("NOOP").code == 250
        _begin(client, ["alice@example.test", "bob@example.test"])
        client.send(b"BDAT %d LAST\r\n" % len(big) + big)
        replies = [client.read_reply() for _ in range(2)]
        assert [(r.code, r.enhanced) for r in replies] == [HEADER_TOO_BIG] * 2
        _begin(client, ["alice@example.test", "bob@example.test"])
        assert [r.code for r in client.data(NORMAL, replies=2)] == [250, 250]
    assert [b"Subject: normal" in message for message in _stored(root, "alice")] == [True]
    assert len(_stored(root, "bob")) == 1


def test_smtp_refuses_a_200k_header_and_takes_one_under_the_limit(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        _begin(client, ["alice@example.test"])
        reply = client.data(_header(200 * 1024) + b"\r\nbody\r\n")[0]
        assert (reply.code, reply.enhanced) == HEADER_TOO_BIG
        assert reply.text.endswith("Message header too large")
        _begin(client, ["alice@example.test"])
        assert client.data(_header(90 * 1024) + b"\r\nbody\r\n")[0].code == 250
        _begin(client, ["alice@example.test"])
        assert client.data(NORMAL)[0].code == 250
    assert len(_stored(root, "alice")) == 2


def test_max_header_size_per_listener_and_a_header_without_body(start_mda, tmp_path):
    root = tmp_path / "mail"
    listener = {"protocol": "smtp", "bind": "127.0.0.1:0", "limits": {"max_header_size": "2K"}}
    server = start_mda(basic_config(root, listeners=[listener]))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        _begin(client, ["alice@example.test"])
        reply = client.data(_header(3 * 1024))[0]  # no empty line, no body: all of it is header
        assert (reply.code, reply.enhanced) == HEADER_TOO_BIG
        _begin(client, ["alice@example.test"])
        assert client.data(_header(1024) + b"\r\n" + b"b" * 900 + b"\r\n")[0].code == 250
    assert len(_stored(root, "alice")) == 1
