"""Listener protection and capacity checks through real sessions.

Access lists (``554 5.7.1`` at connect), connection limits (``421 4.7.0``), per-listener size,
recipient count (``452 4.5.3``, RFC 5321 §4.5.3.1.8) and timeouts (``421 4.4.2``, §4.5.3.2); free space
(``452 4.3.1``) and quota (``552 5.2.2`` / ``452 4.2.2``) refused at RCPT when SIZE says the message
cannot fit (RFC 1870 §6).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import Client
from tests.conftest import basic_config
from tests.peers.filesystems import small_tmpfs
from tests.policy.helpers import MESSAGE, SENDER, maildir_messages
from tests.waiting import wait_for


def rcpt_reply(
    address: tuple[str, int], recipient: str, mail_params: str = "", *, lmtp: bool = True
) -> tuple[int, str]:
    with Client(address) as client:
        client.cmd("LHLO client.test" if lmtp else "EHLO client.test")
        mail = client.cmd(f"MAIL FROM:<{SENDER}> {mail_params}".strip())
        if mail.code != 250:
            return mail.code, mail.enhanced
        reply = client.cmd(f"RCPT TO:<{recipient}>")
        return reply.code, reply.enhanced


def test_access_list_refuses_other_networks_at_connect(start_mda, tmp_path):
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "allow": ["10.0.0.0/8"]},
        {"protocol": "smtp", "bind": "127.0.0.1:0", "allow": ["127.0.0.0/8", "::1"]},
    ]
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners))
    with Client(server.lmtp) as client:
        assert (client.greeting.code, client.greeting.enhanced) == (554, "5.7.1")
        assert client.is_closed()
    with Client(server.smtp) as client:
        assert client.greeting.code == 220


def test_connection_limits_total_and_per_client(start_mda, tmp_path):
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "limits": {"max_connections_per_client": 2}},
        {"protocol": "smtp", "bind": "127.0.0.1:0", "limits": {"max_connections": 1}},
    ]
    # One process: connection limits count per worker process (README, "Workers").
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners, workers=1))
    first, second = Client(server.lmtp), Client(server.lmtp)
    try:
        assert (first.greeting.code, second.greeting.code) == (220, 220)
        with Client(server.lmtp) as third:
            assert (third.greeting.code, third.greeting.enhanced) == (421, "4.7.0")
        # Two sessions are open in the process: the SMTP listener's total of 1 is already reached.
        with Client(server.smtp) as smtp:
            assert (smtp.greeting.code, smtp.greeting.enhanced) == (421, "4.7.0")
    finally:
        first.close()
        second.close()

    def greeted() -> bool:
        with Client(server.lmtp) as again:
            return again.greeting.code == 220

    wait_for(greeted, 5, what="a 220 greeting once the sessions closed", describe=server.log)


def test_per_listener_size_and_recipient_limits(start_mda, tmp_path):
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "limits": {"max_message_size": "1K", "max_recipients": 2}},
        {"protocol": "smtp", "bind": "127.0.0.1:0"},
    ]
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners))
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=2000") == (552, "5.3.4")
    assert rcpt_reply(server.smtp, "alice@example.test", "SIZE=2000", lmtp=False) == (250, "2.1.5")
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        replies = [client.cmd(f"RCPT TO:<{u}@example.test>") for u in ("alice", "bob", "carol")]
        assert [(r.code, r.enhanced) for r in replies] == [(250, "2.1.5"), (250, "2.1.5"), (452, "4.5.3")]
        data = client.data(MESSAGE + b"x" * 2000 + b"\r\n", replies=2)
        assert [(d.code, d.enhanced) for d in data] == [(552, "5.3.4")] * 2


def test_command_and_data_timeouts(start_mda, tmp_path):
    limits = {"command_timeout": "1s", "data_timeout": "1s"}
    server = start_mda(basic_config(tmp_path / "mail", limits=limits))
    with Client(server.lmtp, timeout=10) as client:
        reply = client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
    with Client(server.lmtp, timeout=10) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        client.cmd("RCPT TO:<alice@example.test>")
        assert client.cmd("DATA").code == 354
        client.send(b"Subject: stalled\r\n")
        reply = client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert maildir_messages(tmp_path / "mail") == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs with 200 inodes: a real filesystem whose blocks and inodes run out."""
    with small_tmpfs(tmp_path / "small", "2m", inodes=200) as mount_point:
        yield mount_point


@pytest.mark.root
def test_free_space_is_checked_at_rcpt(start_mda, small_fs):
    config = basic_config(small_fs, free_space_reserve="512K", limits={"max_message_size": "100M"})
    server = start_mda(config)
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=1000") == (250, "2.1.5")
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=1600000") == (452, "4.3.1")
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=3000000") == (452, "4.3.1")
    # Inodes: fill the table, then even a tiny message is refused.
    filler = small_fs / "filler"
    filler.mkdir()
    with pytest.raises(OSError):
        for index in range(1000):
            (filler / str(index)).touch()
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=10") == (452, "4.3.1")
    assert rcpt_reply(server.lmtp, "alice@example.test") == (452, "4.3.1")


def test_percentage_reserve_refuses_when_the_disk_is_too_full(start_mda, tmp_path):
    config = basic_config(tmp_path / "mail", free_space_reserve="99.99999%")
    server = start_mda(config)
    assert rcpt_reply(server.lmtp, "alice@example.test") == (452, "4.3.1")


@pytest.mark.parametrize(("tempfail", "expected"), [(False, (552, "5.2.2")), (True, (452, "4.2.2"))])
def test_quota_is_checked_at_rcpt_with_size(start_mda, tmp_path, tempfail, expected):
    storage = {"format": "maildir", "path": f"{tmp_path}/mail/{{domain}}/{{user}}/Maildir"}
    storage["quota_full_tempfail"] = tempfail
    users = {"alice@example.test": {"quota": "10K"}, "bob@example.test": {}}
    server = start_mda(basic_config(tmp_path / "mail", storage=storage, users=users))
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=5000") == (250, "2.1.5")
    assert rcpt_reply(server.lmtp, "alice@example.test", "SIZE=20000") == expected
    assert rcpt_reply(server.lmtp, "bob@example.test", "SIZE=20000") == (250, "2.1.5")
