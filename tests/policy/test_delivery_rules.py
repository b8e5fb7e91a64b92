"""Where accepted recipients' copies land, and the protections applied at DATA, through real sessions.

Covers: users file and per-user settings, aliases (lists, chains), catch-all, subaddress, IDN paths in
A-label form, case folding, one copy for an address given twice (RFC 2033 §4.2 still wants two replies),
loop checks (Delivered-To, RFC 5321 §6.3; hop count) and the ``with UTF8LMTP`` trace name (RFC 6531 §3.7.3).
"""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.policy.helpers import MESSAGE, SENDER, maildir_messages, policy_config


def lmtp_send(server, recipients: list[str], message: bytes = MESSAGE, *, utf8: bool = False):
    with Client(server.lmtp) as client:
        assert client.cmd("LHLO client.test").code == 250
        mail = client.cmd(f"MAIL FROM:<{SENDER}>" + (" SMTPUTF8" if utf8 else ""))
        assert mail.code == 250
        rcpt = [client.cmd(f"RCPT TO:<{r}>".encode()) for r in recipients]
        accepted = sum(1 for r in rcpt if r.code == 250)
        data = client.data(message, replies=accepted) if accepted else []
        return rcpt, data


@pytest.fixture
def server(start_mda, tmp_path):
    return start_mda(policy_config(tmp_path))


ROUTES = [
    # recipient, mailboxes (relative to the mail root) that receive exactly one copy
    ("alice@example.test", ["example.test/alice/Maildir"]),
    ("Alice@EXAMPLE.test", ["example.test/alice/Maildir"]),
    ("alice+lists@example.test", ["example.test/alice/Maildir"]),
    ("postmaster@example.test", ["example.test/alice/Maildir"]),
    ("team@example.test", ["example.test/alice/Maildir", "example.test/bob/Maildir"]),
    ("chain1@example.test", ["example.test/carol/Maildir"]),
    ("whoever@catch.test", ["example.test/bob/Maildir"]),
    ("hans@xn--bcher-kva.test", ["xn--bcher-kva.test/hans/Maildir"]),
    ("Hans@bücher.test", ["xn--bcher-kva.test/hans/Maildir"]),
    ("jörg@any.test", ["any.test/jörg/Maildir"]),
]


@pytest.mark.parametrize(("recipient", "expected"), ROUTES, ids=[r[0] for r in ROUTES])
def test_copies_land_in_the_resolved_mailboxes(server, tmp_path, recipient, expected):
    rcpt, data = lmtp_send(server, [recipient], utf8=not recipient.isascii())
    assert [r.code for r in rcpt] == [250]
    assert [(d.code, d.enhanced) for d in data] == [(250, "2.0.0")]
    root = tmp_path / "mail"
    found = {str(p.relative_to(root)).rsplit("/", 2)[0] for p in maildir_messages(root)}
    assert found == set(expected)
    for place in expected:
        [copy] = maildir_messages(root / place)
        # mda's own Delivered-To names the address accepted at RCPT (lower-cased domain, A-label).
        assert copy.read_bytes().split(b"\n")[1].startswith(b"Delivered-To: ")


def test_users_file_settings_override_the_defaults(server, tmp_path):
    _, data = lmtp_send(server, ["dave@example.test"])
    assert [d.code for d in data] == [250]
    box = mailbox.mbox(tmp_path / "mail" / "mbox" / "example.test" / "dave")
    [message] = list(box)
    assert message["Subject"] == "policy test"
    assert not (tmp_path / "mail" / "example.test" / "dave").exists()


def test_same_address_twice_gets_two_replies_and_one_copy(server, tmp_path):
    rcpt, data = lmtp_send(server, ["alice@example.test", "ALICE@example.test", "postmaster@example.test"])
    assert [r.code for r in rcpt] == [250, 250, 250]
    assert [d.code for d in data] == [250, 250, 250]
    assert len(maildir_messages(tmp_path / "mail" / "example.test" / "alice" / "Maildir")) == 1


def test_utf8_transaction_is_traced_as_utf8lmtp(server, tmp_path):
    lmtp_send(server, ["jörg@any.test"], utf8=True)
    [copy] = maildir_messages(tmp_path / "mail" / "any.test" / "jörg" / "Maildir")
    text = copy.read_text()
    assert "with UTF8LMTP id" in text and "Delivered-To: jörg@any.test" in text
    lmtp_send(server, ["alice@example.test"])
    [plain] = maildir_messages(tmp_path / "mail" / "example.test" / "alice" / "Maildir")
    assert "with LMTP id" in plain.read_text()


def test_case_sensitive_local_parts(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail", case_sensitive_local_part=True))
    rcpt, _ = lmtp_send(server, ["alice@EXAMPLE.TEST", "Alice@example.test"])
    assert [(r.code, r.enhanced) for r in rcpt] == [(250, "2.1.5"), (550, "5.1.1")]


@pytest.mark.parametrize("lmtp", [True, False], ids=["lmtp", "smtp"])
def test_case_sensitive_local_parts_are_two_recipients(start_mda, tmp_path, lmtp):
    """With ``case_sensitive_local_part`` Alice and alice are two users: each gets its copy, even when
    both are in one transaction (and duplicate suppression by Message-ID keeps them apart too)."""
    users = {"alice@example.test": {}, "Alice@example.test": {}}
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, case_sensitive_local_part=True, users=users, duplicate_window="1h"))
    message = b"Message-ID: <case@example.net>\r\nSubject: case\r\n\r\nbody\r\n"
    with Client(server.lmtp if lmtp else server.smtp) as client:
        assert client.cmd("LHLO x" if lmtp else "EHLO x").code == 250
        rcpt, data = transaction(client, SENDER, ["alice@example.test", "Alice@example.test"], message, lmtp=lmtp)
    assert [r.code for r in rcpt] == [250, 250]
    assert [d.code for d in data] == ([250, 250] if lmtp else [250])
    for user in ("alice", "Alice"):
        [copy] = maildir_messages(root / "example.test" / user / "Maildir")
        assert f"Delivered-To: {user}@example.test" in copy.read_text()


LOOPS = [
    # header lines already in the message, recipient, expected reply after DATA
    (b"Delivered-To: alice@example.test\r\n", "alice@example.test", (554, "5.4.6")),
    (b"Delivered-To: ALICE@example.test\r\n", "alice@example.test", (554, "5.4.6")),
    (b"Delivered-To: alice@example.test\r\n", "postmaster@example.test", (554, "5.4.6")),
    (b"Delivered-To: postmaster@example.test\r\n", "postmaster@example.test", (554, "5.4.6")),
    (b"Delivered-To: postmaster@example.test\r\n", "alice@example.test", (250, "2.0.0")),
    (b"Delivered-To: bob@example.test\r\n", "alice@example.test", (250, "2.0.0")),
    (b"Received: from x by y\r\n" * 50, "alice@example.test", (250, "2.0.0")),
    (b"Received: from x by y\r\n" * 51, "alice@example.test", (554, "5.4.6")),
]


@pytest.mark.parametrize(("header", "recipient", "expected"), LOOPS)
def test_loop_checks(server, header, recipient, expected):
    """Delivered-To refuses only the recipient it names (carol still gets her copy); the hop count
    refuses every recipient of the message."""
    _, data = lmtp_send(server, [recipient, "carol@example.test"], header + MESSAGE)
    other = expected if header.startswith(b"Received") else (250, "2.0.0")
    assert [(d.code, d.enhanced) for d in data] == [expected, other]


def test_max_hops_is_configurable(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail", max_hops=2))
    _, data = lmtp_send(server, ["alice@example.test"], b"Received: a\r\n" * 3 + MESSAGE)
    assert [(d.code, d.enhanced) for d in data] == [(554, "5.4.6")]


def test_smtp_loop_refuses_the_whole_transaction(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        client.cmd("EHLO client.test")
        message = b"Delivered-To: bob@example.test\r\n" + MESSAGE
        _, data = transaction(client, SENDER, ["alice@example.test", "bob@example.test"], message, lmtp=False)
    assert [(d.code, d.enhanced) for d in data] == [(554, "5.4.6")]
    assert maildir_messages(Path(tmp_path / "mail")) == []
