"""Postfix → mda → Dovecot, with the real programs, configured from contrib/postfix.

A private Postfix instance (tests/peers/postfix.py) takes mail by ``sendmail -C`` and by SMTP and hands
it to mda over ``lmtp:unix:``, ``lmtp:inet:`` and ``smtp:``, or runs ``mda deliver`` as its
``mailbox_command``. What must come out: every deliverable copy stored byte-correct and served by a
private Dovecot (tests/peers/dovecot.py); Postfix bouncing with mda's own enhanced code for an unknown
user (5.1.1) and a full mailbox (5.2.2); mail deferred while mda is down and delivered once it is back.
"""

from __future__ import annotations

import imaplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningServer
from tests.peers.dovecot import DovecotSetup, DovecotUser, free_port
from tests.peers.postfix import CONTRIB, Postfix, read_snippet, start_postfix, user_python

pytestmark = pytest.mark.root

SENDER = "sender@outside.test"
DEFAULT_SOCKET = "/run/mda/lmtp.sock"
DEFAULT_LMTP = "[127.0.0.1]:2424"
DEFAULT_SMTP = "[127.0.0.1]:2525"
DEFAULT_MDA = "/opt/mda/bin/mda"
DEFAULT_CONFIG = "/etc/mda/mda.yaml"

PostfixDir = tuple[Path, list[Postfix]]


def message(subject: str, size: int = 0) -> bytes:
    """A complete message (Date and Message-ID present, so Postfix's cleanup adds nothing below its
    Received field), with a dot-stuffing case and optional padding."""
    padding = b"".join(
        b"padding line %05d ................................................\r\n" % i for i in range(size // 64)
    )
    return (
        f"From: Sender <{SENDER}>\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@outside.test>\r\n"
        "\r\n"
        f"Hello from {subject}.\r\n.a line that starts with a dot\r\n"
    ).encode() + padding


def stored_form(wire: bytes) -> bytes:
    """What a Maildir file ends with: the message as submitted, LF line endings."""
    return wire.replace(b"\r\n", b"\n")


def snippet(name: str, replacements: dict[str, str]) -> dict[str, str]:
    """A contrib/postfix main.cf snippet with its example paths and ports replaced by the test's."""
    settings = read_snippet(CONTRIB / name)
    for key, value in settings.items():
        for old, new in replacements.items():
            value = value.replace(old, new)
        settings[key] = value
    return settings


def mda_config(mail_root: Path, listeners: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hostname": "mx.example.test",
        "listeners": listeners,
        "domains": ["example.test"],
        "storage": {
            "format": "maildir",
            "path": f"{mail_root}/{{domain}}/{{user}}/Maildir",
            "owner": "vmail",
            "create_folders": True,
        },
        "users": {
            "alice@example.test": {},
            "bob@example.test": {},
            "carol@example.test": {},
            "full@example.test": {"quota": "1K"},
        },
    }
    config.update(overrides)
    return config


def lmtp_socket_listener(directory: Path) -> tuple[str, dict[str, Any]]:
    """An LMTP UNIX socket in a directory Postfix's lmtp client (user postfix) can reach and write."""
    socket_dir = directory / "mda"
    socket_dir.mkdir(mode=0o755)
    socket_path = str(socket_dir / "lmtp.sock")
    return socket_path, {"protocol": "lmtp", "bind": f"unix:{socket_path}", "socket_mode": "0666"}


def new_messages(maildir: Path) -> list[bytes]:
    new = maildir / "new"
    return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []


def imap_messages(client: imaplib.IMAP4, folder: str = "INBOX") -> list[bytes]:
    status, _ = client.select(folder, readonly=True)
    assert status == "OK", folder
    _, data = client.search(None, "ALL")
    found = []
    for number in data[0].split():
        _, parts = client.fetch(number, "(BODY.PEEK[])")
        found.append(parts[0][1])
    return found


def assert_stored(maildir: Path, wire: bytes, recipient: str) -> bytes:
    """One message in new/: mda's trace block first, Postfix's Received below it, the message last."""
    [stored] = new_messages(maildir)
    assert stored.startswith(f"Return-Path: <{SENDER}>\nDelivered-To: {recipient}\nReceived: ".encode())
    assert stored.endswith(stored_form(wire))
    assert b"by relay.example.test (Postfix" in stored
    return stored


def test_virtual_mailboxes_over_lmtp_unix_socket(
    dovecot_factory: DovecotSetup, postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    directory, started = postfix_factory
    mail_root = dovecot_factory.mail_root
    socket_path, listener = lmtp_socket_listener(directory)
    config = mda_config(mail_root, [listener])
    server = start_mda(config)
    postfix = start_postfix(directory, snippet("main.cf.lmtp-unix", {DEFAULT_SOCKET: socket_path}))
    started.append(postfix)
    assert postfix.settings["virtual_transport"] == f"lmtp:unix:{socket_path}"

    first, second, big = message("first"), message("second"), message("too big", size=4096)
    postfix.sendmail(SENDER, ["alice@example.test", "alice+lists@example.test"], first)
    assert postfix.submit(SENDER, ["bob@example.test", "nobody@example.test"], second) == {}
    assert postfix.submit(SENDER, ["full@example.test"], big) == {}

    for recipient in ("alice@example.test", "alice+lists@example.test", "bob@example.test"):
        assert "relay=" in postfix.wait_for_status(recipient, "sent")
    unknown = postfix.wait_for_status("nobody@example.test", "bounced")
    assert "dsn=5.1.1" in unknown and "550 5.1.1" in unknown
    full = postfix.wait_for_status("full@example.test", "bounced")
    assert "dsn=5.2.2" in full and "552 5.2.2" in full

    # mda stopped: Postfix cannot connect and defers; once mda is back the retry delivers.
    server.stop()
    postfix.sendmail(SENDER, ["carol@example.test"], message("deferred"))
    deferred = postfix.wait_for_status("carol@example.test", "deferred")
    assert "dsn=4." in deferred
    start_mda(config)
    postfix.flush()
    postfix.wait_for_status("carol@example.test", "sent")

    base = mail_root / "example.test"
    files = {
        "alice": assert_stored(base / "alice/Maildir", first, "alice@example.test"),
        "lists": assert_stored(base / "alice/Maildir/.lists", first, "alice+lists@example.test"),
        "bob": assert_stored(base / "bob/Maildir", second, "bob@example.test"),
        "carol": assert_stored(base / "carol/Maildir", message("deferred"), "carol@example.test"),
    }
    assert new_messages(base / "full/Maildir") == []

    dovecot = dovecot_factory.start(
        [DovecotUser.maildir(f"{name}@example.test", base / name) for name in ("alice", "bob", "carol")]
    )
    crlf = {name: data.replace(b"\n", b"\r\n") for name, data in files.items()}
    with dovecot.imap("alice@example.test") as client:
        assert imap_messages(client) == [crlf["alice"]]
        assert imap_messages(client, "lists") == [crlf["lists"]]
    with dovecot.imap("bob@example.test") as client:
        assert imap_messages(client) == [crlf["bob"]]
    with dovecot.imap("carol@example.test") as client:
        assert imap_messages(client) == [crlf["carol"]]


def test_lmtp_inet_and_smtp_next_hops(
    dovecot_factory: DovecotSetup, postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    directory, started = postfix_factory
    mail_root = dovecot_factory.mail_root
    config = mda_config(
        mail_root, [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "smtp", "bind": "127.0.0.1:0"}]
    )
    server = start_mda(config)
    lmtp_hop = f"[127.0.0.1]:{server.lmtp[1]}"
    smtp_hop = f"[127.0.0.1]:{server.smtp[1]}"
    settings = snippet("main.cf.lmtp-inet", {DEFAULT_LMTP: lmtp_hop})
    smtp_transport = snippet("main.cf.smtp", {DEFAULT_SMTP: smtp_hop})["virtual_transport"]
    # bob and an unknown address go through mda's SMTP listener, everyone else through LMTP.
    settings["transport_maps"] = f"inline:{{ bob@example.test={smtp_transport}, ghost@example.test={smtp_transport} }}"
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    wire = message("inet")
    assert postfix.submit(SENDER, ["alice@example.test", "bob@example.test"], wire) == {}
    postfix.sendmail(SENDER, ["nobody@example.test"], message("unknown over lmtp"))
    postfix.sendmail(SENDER, ["ghost@example.test"], message("unknown over smtp"))

    assert f":{server.lmtp[1]}" in postfix.wait_for_status("alice@example.test", "sent")
    assert f":{server.smtp[1]}" in postfix.wait_for_status("bob@example.test", "sent")
    assert "dsn=5.1.1" in postfix.wait_for_status("nobody@example.test", "bounced")
    ghost = postfix.wait_for_status("ghost@example.test", "bounced")
    assert "dsn=5.1.1" in ghost and f":{server.smtp[1]}" in ghost

    base = mail_root / "example.test"
    alice = assert_stored(base / "alice/Maildir", wire, "alice@example.test")
    bob = assert_stored(base / "bob/Maildir", wire, "bob@example.test")
    assert b" with LMTP " in alice and b" with ESMTP " in bob
    dovecot = dovecot_factory.start([DovecotUser.maildir(f"{n}@example.test", base / n) for n in ("alice", "bob")])
    with dovecot.imap("alice@example.test") as client:
        assert imap_messages(client) == [alice.replace(b"\n", b"\r\n")]
    with dovecot.imap("bob@example.test") as client:
        assert imap_messages(client) == [bob.replace(b"\n", b"\r\n")]


def test_mailbox_command_runs_mda_deliver(dovecot_factory: DovecotSetup, postfix_factory: PostfixDir) -> None:
    """local(8) runs ``mda deliver`` as the recipient (the test's system user ``vmail``)."""
    directory, started = postfix_factory
    mail_root = dovecot_factory.mail_root
    python, env = user_python(directory, "vmail")
    config_path = directory / "mda.yaml"
    config = mda_config(
        mail_root,
        [{"protocol": "lmtp", "bind": f"unix:{directory}/unused.sock"}],
        domains=["local.test"],
        users={"vmail@local.test": {}},
    )
    del config["storage"]["owner"]
    config_path.write_text(yaml.safe_dump(config))
    config_path.chmod(0o644)
    command = f"/usr/bin/env PYTHONPATH={env['PYTHONPATH']} PYTHONDONTWRITEBYTECODE=1 {python} -m mda"
    settings = snippet("main.cf.mailbox_command", {DEFAULT_MDA: command, DEFAULT_CONFIG: str(config_path)})
    settings["mydestination"] = "local.test"
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    wire, folder_wire = message("lda"), message("lda folder")
    postfix.sendmail(SENDER, ["vmail@local.test"], wire)
    assert postfix.submit(SENDER, ["vmail+lists@local.test"], folder_wire) == {}
    assert "relay=local" in postfix.wait_for_status("vmail@local.test", "sent")
    postfix.wait_for_status("vmail+lists@local.test", "sent")

    # The configuration becomes unreadable: mda exits 75, Postfix defers with mda's 4.3.5.
    config_path.chmod(0o600)
    postfix.sendmail(SENDER, ["vmail@local.test"], message("while broken"))
    deferred = postfix.wait_for_status("vmail@local.test", "deferred")
    assert "dsn=4.3.5" in deferred
    config_path.chmod(0o644)
    postfix.flush()
    postfix.wait_for_status("vmail@local.test", "sent", count=2)

    home = mail_root / "local.test" / "vmail"
    stored = new_messages(home / "Maildir")
    assert len(stored) == 2
    first = next(data for data in stored if data.endswith(stored_form(wire)))
    lines = first.split(b"\n")
    assert lines[:2] == [f"Return-Path: <{SENDER}>".encode(), b"Delivered-To: vmail@local.test"]
    assert lines[2] == b"Received: from localhost (localhost)" and b" with local id " in lines[3]
    assert first.count(b"Delivered-To:") == 1
    [in_folder] = new_messages(home / "Maildir/.lists")
    assert in_folder.endswith(stored_form(folder_wire))

    dovecot = dovecot_factory.start([DovecotUser.maildir("vmail@local.test", home)])
    with dovecot.imap("vmail@local.test") as client:
        assert first.replace(b"\n", b"\r\n") in imap_messages(client)
        assert imap_messages(client, "lists") == [in_folder.replace(b"\n", b"\r\n")]


def test_mailbox_transport_hands_local_users_to_mda_over_lmtp(
    dovecot_factory: DovecotSetup, postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    """local(8) keeps aliases and .forward, and hands the mailbox delivery to mda (main.cf.mailbox_transport)."""
    directory, started = postfix_factory
    mail_root = dovecot_factory.mail_root
    socket_path, listener = lmtp_socket_listener(directory)
    config = mda_config(mail_root, [listener], domains=["local.test"], users={"vmail@local.test": {}})
    start_mda(config)
    settings = snippet("main.cf.mailbox_transport", {DEFAULT_SOCKET: socket_path})
    assert settings["mailbox_transport"] == f"lmtp:unix:{socket_path}"
    settings["mydestination"] = "local.test"
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    wire = message("mailbox transport")
    postfix.sendmail(SENDER, ["vmail@local.test"], wire)
    assert "relay=" in postfix.wait_for_status("vmail@local.test", "sent")
    stored = assert_stored(mail_root / "local.test" / "vmail" / "Maildir", wire, "vmail@local.test")
    dovecot = dovecot_factory.start([DovecotUser.maildir("vmail@local.test", mail_root / "local.test" / "vmail")])
    with dovecot.imap("vmail@local.test") as client:
        assert imap_messages(client) == [stored.replace(b"\n", b"\r\n")]


def test_several_mda_instances_behind_one_mx_share_the_maildir(
    dovecot_factory: DovecotSetup, postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer]
) -> None:
    """Postfix (3.5+) tries a list of LMTP next hops in order; instances share one mail root."""
    directory, started = postfix_factory
    mail_root = dovecot_factory.mail_root
    config = mda_config(mail_root, [{"protocol": "lmtp", "bind": "127.0.0.1:0"}])
    first, second = start_mda(config), start_mda(config)
    dead = free_port()
    # In a list, only the first next hop carries the "inet:" prefix; the others are inet by default.
    hops = ", ".join(f"[127.0.0.1]:{port}" for port in (dead, first.lmtp[1], second.lmtp[1]))
    transport = directory / "transport"
    transport.write_text(f"example.test lmtp:inet:{hops}\n")
    settings = snippet("main.cf.lmtp-inet", {DEFAULT_LMTP: f"[127.0.0.1]:{first.lmtp[1]}"})
    settings["transport_maps"] = f"texthash:{transport}"
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    postfix.sendmail(SENDER, ["alice@example.test"], message("to the first instance"))
    assert f":{first.lmtp[1]}" in postfix.wait_for_status("alice@example.test", "sent")
    first.stop()
    postfix.sendmail(SENDER, ["alice@example.test"], message("to the second instance"))
    assert f":{second.lmtp[1]}" in postfix.wait_for_status("alice@example.test", "sent", count=2)

    stored = new_messages(mail_root / "example.test/alice/Maildir")
    assert len(stored) == 2
    dovecot = dovecot_factory.start([DovecotUser.maildir("alice@example.test", mail_root / "example.test/alice")])
    with dovecot.imap("alice@example.test") as client:
        assert sorted(imap_messages(client)) == sorted(data.replace(b"\n", b"\r\n") for data in stored)
