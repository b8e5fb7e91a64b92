"""Every recipient rule, as the reply a real LMTP session gets at RCPT (and SMTP for a sample).

RFC 5321 §4.1.2 (syntax), §4.5.3.1 (64-octet local part), RFC 6531 §3.4 (non-ASCII needs SMTPUTF8:
``553 5.6.7``), docs/configuration.md "Path templates" (``550 5.1.3``), RFC 3463 codes. Each row: what the client
sends after ``RCPT TO:``, whether MAIL carried ``SMTPUTF8``, and the exact reply.
"""

from __future__ import annotations

import smtplib

import pytest

from tests.clients import Client
from tests.policy.helpers import SENDER, policy_config

LONG = "x" * 1000
ROWS: list[tuple[str, bytes, bool, int, str]] = [
    # name, RCPT argument, SMTPUTF8, code, enhanced
    ("user", b"<alice@example.test>", False, 250, "2.1.5"),
    ("user upper case", b"<ALICE@EXAMPLE.TEST>", False, 250, "2.1.5"),
    ("quoted plain local part", b'<"alice"@example.test>', False, 250, "2.1.5"),
    ("subaddress", b"<alice+lists@example.test>", False, 250, "2.1.5"),
    ("users_file user", b"<dave@example.test>", False, 250, "2.1.5"),
    ("alias", b"<postmaster@example.test>", False, 250, "2.1.5"),
    ("alias list", b"<team@example.test>", False, 250, "2.1.5"),
    ("alias chain", b"<chain1@example.test>", False, 250, "2.1.5"),
    ("alias chain of 20 (MAX_ALIAS_DEPTH)", b"<deep1@example.test>", False, 250, "2.1.5"),
    ("alias chain of 21", b"<deep0@example.test>", False, 550, "5.1.1"),
    ("catch-all", b"<anyone@catch.test>", False, 250, "2.1.5"),
    ("source route", b"<@relay.test:alice@example.test>", False, 250, "2.1.5"),
    ("no brackets", b"alice@example.test", False, 250, "2.1.5"),
    ("unknown user", b"<nobody@example.test>", False, 550, "5.1.1"),
    ("not our domain", b"<alice@elsewhere.test>", False, 550, "5.7.1"),
    ("address literal", b"<alice@[127.0.0.1]>", False, 550, "5.7.1"),
    ("A-label of our IDN domain", b"<hans@xn--bcher-kva.test>", False, 250, "2.1.5"),
    ("U-label with SMTPUTF8", "<hans@bücher.test>".encode(), True, 250, "2.1.5"),
    ("U-label without SMTPUTF8", "<hans@bücher.test>".encode(), False, 553, "5.6.7"),
    ("UTF-8 local part with SMTPUTF8", "<jörg@any.test>".encode(), True, 250, "2.1.5"),
    ("UTF-8 local part without SMTPUTF8", "<jörg@any.test>".encode(), False, 553, "5.6.7"),
    ("mixed-script IDN (Cyrillic a)", "<alice@exаmple.test>".encode(), True, 550, "5.7.1"),
    ("mixed-script IDN without SMTPUTF8", "<alice@exаmple.test>".encode(), False, 553, "5.6.7"),
    # Bytes no command may hold (invalid UTF-8, NUL, bare CR) are refused before the address is parsed.
    ("invalid UTF-8", b"<a\xffb@any.test>", True, 500, "5.5.2"),
    ("dot-dot path", b"<../etc@any.test>", False, 501, "5.1.3"),
    ("leading dot", b"<.hidden@any.test>", False, 501, "5.1.3"),
    ("slash in local part, any_user", b"<a/b@any.test>", False, 550, "5.1.3"),
    ("slash in local part, unknown user", b"<a/b@example.test>", False, 550, "5.1.1"),
    ("quoted dot", b'<"."@any.test>', False, 550, "5.1.3"),
    ("quoted dot-dot", b'<".."@any.test>', False, 550, "5.1.3"),
    ("quoted dot-dot-slash", b'<"../x"@any.test>', False, 550, "5.1.3"),
    ("quoted with space", b'<"a b"@any.test>', False, 550, "5.1.3"),
    ("NUL", b"<a\x00b@any.test>", False, 500, "5.5.2"),
    ("comment", b"<alice(comment)@example.test>", False, 501, "5.1.3"),
    ("1000-character local part", f"<{LONG}@any.test>".encode(), False, 501, "5.1.3"),
    ("65-octet local part", f"<{'y' * 65}@any.test>".encode(), False, 501, "5.1.3"),
    ("64-octet local part", f"<{'y' * 64}@any.test>".encode(), False, 250, "2.1.5"),
    ("null path", b"<>", False, 501, "5.1.3"),
    ("no domain", b"<alice>", False, 501, "5.1.3"),
    ("two ats", b"<a@b@example.test>", False, 501, "5.1.3"),
    ("bad domain", b"<alice@exa_mple.test>", False, 501, "5.1.3"),
    ("missing bracket", b"<alice@example.test", False, 501, "5.1.3"),
    ("bare CR inside", b"<al\rice@example.test>", False, 500, "5.5.2"),
    ("DEL character", b"<al\x7fice@any.test>", False, 501, "5.1.3"),
    ("comma in local part", b"<a,b@any.test>", False, 501, "5.1.3"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.mdaproc import start_server

    tmp_path = tmp_path_factory.mktemp("rcpt")
    running = start_server(policy_config(tmp_path), tmp_path / "server0")
    yield running
    running.stop()


@pytest.mark.parametrize(("name", "argument", "utf8", "code", "enhanced"), ROWS, ids=[row[0] for row in ROWS])
def test_rcpt_reply(server, name, argument, utf8, code, enhanced):
    with Client(server.lmtp) as client:
        assert client.cmd("LHLO client.test").code == 250
        mail = client.cmd(f"MAIL FROM:<{SENDER}>" + (" SMTPUTF8" if utf8 else ""))
        assert mail.code == 250, mail
        reply = client.cmd(b"RCPT TO:" + argument)
        assert (reply.code, reply.enhanced) == (code, enhanced), f"{name}: {reply}"
        # The session stays in step after every refusal.
        assert client.cmd("RCPT TO:<bob@example.test>").code == 250


def test_rendered_paths_are_reused_but_refusals_are_not(server):
    """Mailbox paths rendered from the address are kept for the next RCPT; a refused value is refused
    again every time, also after the same user was accepted with a safe detail."""
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        for argument in ("<a+x@any.test>", "<a/b@any.test>", "<a+x@any.test>", "<a/b@any.test>"):
            reply = client.cmd(f"RCPT TO:{argument}")
            expected = (250, "2.1.5") if "/" not in argument else (550, "5.1.3")
            assert (reply.code, reply.enhanced) == expected, (argument, reply)


def test_bare_lf_ends_the_command_and_the_rest_is_an_unknown_command(server):
    """A bare LF inside RCPT cannot smuggle a second address: the line ends there (501 5.1.3, missing
    ``>``) and the remainder is refused as a command (500 5.5.1)."""
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        client.send(b"RCPT TO:<al\nice@example.test>\r\n")
        first, second = client.read_reply(), client.read_reply()
        assert (first.code, first.enhanced) == (501, "5.1.3")
        assert (second.code, second.enhanced) == (500, "5.5.1")


def test_non_ascii_sender_without_smtputf8_is_553(server):
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        reply = client.cmd("MAIL FROM:<jörg@bücher.test>".encode())
        assert (reply.code, reply.enhanced) == (553, "5.6.7")


def test_smtp_listener_gives_the_same_replies(server):
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        assert "smtputf8" in client.esmtp_features
        client.mail(SENDER)
        assert client.rcpt("Team@Example.Test")[0] == 250
        code, text = client.rcpt("x@elsewhere.test")
        assert (code, text.split()[0]) == (550, b"5.7.1")
        code, text = client.rcpt("a/b@any.test")
        assert (code, text.split()[0]) == (550, b"5.1.3")
