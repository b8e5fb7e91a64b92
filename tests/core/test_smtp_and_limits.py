"""SMTP all-or-nothing delivery, size limits, bare newlines, hostile local parts, big messages."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import pytest

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.core.test_lmtp_delivery import MESSAGE, block_maildir, maildir_files


def test_smtp_delivers_to_all_with_one_reply(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with smtplib.SMTP(*server.smtp) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
        assert "pipelining" in client.esmtp_features and "enhancedstatuscodes" in client.esmtp_features
        refused = client.sendmail("s@remote.test", ["alice@example.test", "bob@example.test"], MESSAGE)
        assert refused == {}
    for user in ("alice", "bob"):
        [path] = maildir_files(tmp_path / "mail", user)
        assert b"with ESMTP id" in path.read_bytes()


def test_smtp_storage_failure_commits_nothing(start_mda, tmp_path):
    root = tmp_path / "mail"
    block_maildir(root, "bob")
    server = start_mda(basic_config(root))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        rcpt, data = transaction(
            client, "s@remote.test", ["alice@example.test", "bob@example.test"], MESSAGE, lmtp=False
        )
        assert [r.code for r in rcpt] == [250, 250]
        assert len(data) == 1 and (data[0].code, data[0].enhanced) == (451, "4.3.0")
        assert client.cmd("NOOP").code == 250
    assert maildir_files(root, "alice") == []
    assert list((root / "example.test" / "alice" / "Maildir" / "tmp").iterdir()) == []


def test_smtp_refuses_lhlo_and_relaying(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        assert client.cmd("LHLO client.test").code == 500
        assert client.cmd("HELO client.test").code == 250
        client.cmd("MAIL FROM:<s@remote.test>")
        reply = client.cmd("RCPT TO:<victim@elsewhere.test>")
        assert (reply.code, reply.enhanced) == (550, "5.7.1")
        reply = client.cmd("RCPT TO:<nobody@example.test>")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")


def test_size_parameter_and_oversized_data_give_552_and_session_goes_on(start_mda, tmp_path):
    config = basic_config(tmp_path / "mail", limits={"max_message_size": "10K"})
    server = start_mda(config)
    with Client(server.lmtp) as client:
        lhlo = client.cmd("LHLO client.test")
        assert "SIZE 10240" in lhlo.lines
        reply = client.cmd("MAIL FROM:<s@remote.test> SIZE=20000")
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
        big = b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n" * 0 + (b"y" * 998 + b"\r\n") * 30
        _, data = transaction(client, "s@remote.test", ["alice@example.test", "bob@example.test"], big)
        assert [(d.code, d.enhanced) for d in data] == [(552, "5.3.4"), (552, "5.3.4")]
        _, data = transaction(client, "s@remote.test", ["alice@example.test"], MESSAGE)
        assert data[0].code == 250
    assert len(maildir_files(tmp_path / "mail", "alice")) == 1
    assert maildir_files(tmp_path / "mail", "bob") == []


def test_too_many_recipients(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail", limits={"max_recipients": 2}))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        codes = [client.cmd(f"RCPT TO:<{u}@example.test>") for u in ("alice", "bob", "carol")]
        assert [(c.code, c.enhanced) for c in codes] == [(250, "2.1.5"), (250, "2.1.5"), (452, "4.5.3")]


@pytest.mark.parametrize(
    ("data", "mode", "codes"),
    [
        (b"Subject: a\r\n\r\nbare\nLF\r\n.\r\n", "reject", [(550, "5.6.0"), (550, "5.6.0")]),
        (b"Subject: a\r\n\r\nbare\rCR\r\n.\r\n", "reject", [(550, "5.6.0"), (550, "5.6.0")]),
        (b"Subject: a\r\n\r\nsmuggle\n.\nMAIL FROM:<x@y>\r\n.\r\n", "reject", [(550, "5.6.0"), (550, "5.6.0")]),
        (b"Subject: a\r\n\r\nbare\nLF and\rCR\r\n.\r\n", "normalize", [(250, "2.0.0"), (250, "2.0.0")]),
    ],
)
def test_bare_newlines(start_mda, tmp_path, data, mode, codes):
    server = start_mda(basic_config(tmp_path / "mail", bare_newline=mode))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        client.cmd("RCPT TO:<bob@example.test>")
        assert client.cmd("DATA").code == 354
        client.send(data)
        assert [(r.code, r.enhanced) for r in (client.read_reply(), client.read_reply())] == codes
        assert client.cmd("NOOP").code == 250
    files = maildir_files(tmp_path / "mail", "alice")
    if mode == "normalize":
        assert files[0].read_bytes().endswith(b"\n\nbare\nLF and\nCR\n")
    else:
        assert files == []


@pytest.mark.parametrize(
    ("local_part", "code", "enhanced"),
    [
        ("../x", 501, "5.1.3"),
        ("..", 501, "5.1.3"),
        (".", 501, "5.1.3"),
        ("a/b", 550, "5.1.3"),
        ('"a/b"', 550, "5.1.3"),
        ('"../../etc"', 550, "5.1.3"),
        ("a\x00b", 500, "5.5.2"),
        ("x" * 1000, 501, "5.1.3"),
    ],
)
def test_hostile_local_parts_never_write_outside(start_mda, tmp_path, local_part, code, enhanced):
    server = start_mda(basic_config(tmp_path / "mail", domains={"example.test": {"any_user": True}}))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd("MAIL FROM:<s@remote.test>")
        reply = client.cmd(f"RCPT TO:<{local_part}@example.test>".encode("utf-8", "surrogateescape"))
        assert (reply.code, reply.enhanced) == (code, enhanced), reply
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "server" not in p.parts[len(tmp_path.parts)]]
    assert written == []


def test_client_vanishing_mid_data_stores_nothing_and_server_goes_on(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    client = Client(server.lmtp)
    client.cmd("LHLO client.test")
    client.cmd("MAIL FROM:<s@remote.test>")
    client.cmd("RCPT TO:<alice@example.test>")
    client.cmd("DATA")
    client.send(b"Subject: half\r\n\r\n" + b"partial line\r\n" * 1000)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    server.wait_for_log("event=session_close")  # the server saw the hang-up and dropped the spool
    with Client(server.lmtp) as other:
        assert other.cmd("LHLO again.test").code == 250
    tmp_dir = tmp_path / "mail" / "example.test" / "alice" / "Maildir"
    assert maildir_files(tmp_path / "mail", "alice") == []
    assert not tmp_dir.exists() or list((tmp_dir / "tmp").iterdir()) == []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_100_mb_message_keeps_memory_bounded(start_mda, tmp_path):
    # One process: the one whose memory is measured.
    server = start_mda(basic_config(tmp_path / "mail", workers=1, limits={"max_message_size": "200M"}))
    with Client(server.lmtp, timeout=120) as client:
        client.cmd("LHLO client.test")
        before = _rss_kib(server.process.pid)
        client.cmd("MAIL FROM:<s@remote.test>")
        client.cmd("RCPT TO:<alice@example.test>")
        assert client.cmd("DATA").code == 354
        line = b"0123456789" * 99 + b"\r\n"
        chunk = b"Subject: big\r\n\r\n" + line * 1000
        client.send(chunk)
        total = len(chunk)
        block = line * 4096
        while total < 100 * 1024 * 1024:
            client.send(block)
            total += len(block)
        client.send(b".\r\n")
        reply = client.read_reply()
        assert reply.code == 250, reply
        peak = _hwm_kib(server.process.pid)
    [path] = maildir_files(tmp_path / "mail", "alice")
    assert path.stat().st_size > 100 * 1024 * 1024 - 2 * 1024 * 1024
    growth_mib = (peak - before) / 1024
    print(
        f"\n100 MB message: RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, growth {growth_mib:.1f} MiB"
    )
    assert growth_mib < 25, f"peak RSS grew by {growth_mib:.1f} MiB for a 100 MB message"


def test_bare_postmaster_is_accepted_for_the_first_domain(start_mda, tmp_path):
    """RFC 5321 §4.5.1: ``RCPT TO:<Postmaster>`` without a domain must be accepted."""
    config = basic_config(tmp_path / "mail", aliases={"postmaster@example.test": "alice@example.test"})
    server = start_mda(config)
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        rcpt, data = transaction(client, "s@remote.test", ["Postmaster"], MESSAGE, lmtp=False)
        assert rcpt[0].code == 250 and data[0].code == 250
    [path] = maildir_files(tmp_path / "mail", "alice")
    assert b"Delivered-To: postmaster@example.test" in path.read_bytes()
