"""Errors and junk commands per session (Postfix's smtpd_hard_error_limit and smtpd_junk_command_limit):
a client harvesting addresses or idling with NOOPs is cut off with ``421 4.7.0``; an MTA handing over
mail on LMTP is not."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.clients import Client, Reply
from tests.conftest import basic_config

MESSAGE = b"Subject: limits\r\n\r\nbody\r\n"
HARD_ERROR_LIMIT = 20
JUNK_COMMAND_LIMIT = 100
TOO_MANY_ERRORS = (421, "4.7.0")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Pipeline ``data``; the server may hang up before it has read it all."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _pipeline(client: Client, commands: list[bytes]) -> list[Reply]:
    """Send every command at once (from a thread: the server may stop reading), read replies to the end."""
    sender = threading.Thread(target=_send_quietly, args=(client.sock, b"".join(c + b"\r\n" for c in commands)))
    sender.start()
    replies: list[Reply] = []
    try:
        while len(replies) < len(commands):
            replies.append(client.read_reply())
    except (ConnectionError, OSError):
        pass
    sender.join(30)
    return replies


def _codes(replies: list[Reply]) -> list[tuple[int, str]]:
    return [(reply.code, reply.enhanced) for reply in replies]


def test_smtp_closes_after_20_refused_recipients_and_logs_no_flood(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.smtp) as client:
        assert client.cmd("EHLO client.test").code == 250
        assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
        replies = _pipeline(client, [b"RCPT TO:<nobody%d@example.test>" % i for i in range(20_000)])
        assert client.is_closed()
    assert _codes(replies) == [(550, "5.1.1")] * HARD_ERROR_LIMIT + [TOO_MANY_ERRORS]
    log = server.wait_for_log("event=error_limit")
    assert log.count("event=rcpt_refused") == HARD_ERROR_LIMIT
    assert len(log.splitlines()) < 100
    with Client(server.smtp) as other:
        assert other.cmd("EHLO still.serving").code == 250


def test_junk_commands_past_100_count_as_errors(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    cycle = [b"NOOP", b"RSET", b"VRFY someone", b"HELP"]
    with Client(server.smtp) as client:
        # EHLO is junk too: 100 free junk commands, then 20 that each count as an error.
        replies = _pipeline(client, [b"EHLO client.test"] + [cycle[i % 4] for i in range(300)])
    free = JUNK_COMMAND_LIMIT + HARD_ERROR_LIMIT
    assert {reply.code for reply in replies[:free]} == {250, 252, 214}
    assert _codes(replies[free:]) == [TOO_MANY_ERRORS]
    # BDAT 0 without LAST moves no mail either (RFC 3030 allows it, nothing requires a stream of them).
    with Client(server.smtp) as client:
        prefix = [b"EHLO client.test", b"MAIL FROM:<s@remote.test>", b"RCPT TO:<alice@example.test>"]
        replies = _pipeline(client, prefix + [b"BDAT 0"] * 300)
    assert {reply.code for reply in replies[: len(prefix) + free - 1]} == {250}
    assert _codes(replies[len(prefix) + free - 1 :]) == [TOO_MANY_ERRORS]
    assert not (tmp_path / "mail" / "example.test" / "alice" / "Maildir" / "new").exists()


def test_a_delivered_message_starts_the_counts_again(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    refused = [b"MAIL FROM:<s@remote.test>"] + [b"RCPT TO:<nobody%d@example.test>" % i for i in range(19)]
    with Client(server.smtp) as client:
        # 100 junk commands (EHLO, 98 NOOPs, RSET) and 19 errors: one short of each limit.
        replies = _pipeline(client, [b"EHLO client.test"] + [b"NOOP"] * 98 + refused + [b"RSET"])
        assert len(replies) == 120 and replies[-1].code == 250
        assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
        assert client.cmd("RCPT TO:<alice@example.test>").code == 250
        assert client.data(MESSAGE)[0].code == 250
        # The delivery started both counts again: as many junk commands and errors as before are fine.
        replies = _pipeline(client, [b"NOOP"] * 99 + refused + [b"RSET"])
        assert _codes(replies[-21:-1]) == [(250, "2.1.0")] + [(550, "5.1.1")] * 19
        assert replies[-1].code == 250
        assert client.cmd("NOOP").code == 250  # junk 101: the 20th error, so the next command is refused
        assert _codes([client.cmd("NOOP")]) == [TOO_MANY_ERRORS]


def test_lmtp_lets_an_mx_transaction_with_many_refused_recipients_through(start_mda, tmp_path):
    """An MX hands over one transaction with hundreds of recipients, most refused, and reuses the
    connection with RSET and NOOP in between (Postfix's LMTP connection cache)."""
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    with Client(server.lmtp) as client:
        assert client.cmd("LHLO mx.example.net").code == 250
        for round_ in range(3):
            recipients = [b"RCPT TO:<gone%d.%d@example.test>" % (round_, i) for i in range(300)]
            recipients[::100] = [
                b"RCPT TO:<alice@example.test>",
                b"RCPT TO:<bob@example.test>",
                b"RCPT TO:<x@else.test>",
            ]
            replies = _pipeline(client, [b"NOOP", b"RSET", b"MAIL FROM:<s@remote.test>", *recipients])
            assert len(replies) == 303, replies[-1]
            accepted = sum(1 for reply in replies[3:] if reply.code == 250)
            assert accepted == 2 and sum(1 for reply in replies[3:] if reply.code >= 500) == 298
            assert [reply.code for reply in client.data(MESSAGE, replies=accepted)] == [250, 250]
        # Even a whole transaction refused (DATA then has no recipient) leaves the session usable.
        replies = _pipeline(
            client, [b"MAIL FROM:<s@remote.test>"] + [b"RCPT TO:<gone%d@example.test>" % i for i in range(500)]
        )
        assert {reply.code for reply in replies[1:]} == {550}
        assert client.cmd("RSET").code == 250
    assert len(list((root / "example.test" / "alice" / "Maildir" / "new").iterdir())) == 3


def test_limits_are_set_per_listener(start_mda, tmp_path):
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "limits": {"hard_error_limit": 3}},
        {"protocol": "smtp", "bind": "127.0.0.1:0", "limits": {"hard_error_limit": 0, "junk_command_limit": 0}},
    ]
    server = start_mda(basic_config(tmp_path / "mail", listeners=listeners))
    with Client(server.lmtp) as client:
        client.cmd("LHLO mx.example.net")
        replies = _pipeline(
            client, [b"MAIL FROM:<s@remote.test>"] + [b"RCPT TO:<gone%d@example.test>" % i for i in range(10)]
        )
    assert _codes(replies[1:]) == [(550, "5.1.1")] * 3 + [TOO_MANY_ERRORS]
    with Client(server.smtp) as client:  # 0: no limit
        client.cmd("EHLO client.test")
        commands = [b"MAIL FROM:<s@remote.test>"] + [b"RCPT TO:<gone%d@example.test>" % i for i in range(100)]
        replies = _pipeline(client, commands + [b"NOOP"] * 300)
        assert len(replies) == 401 and replies[-1].code == 250
