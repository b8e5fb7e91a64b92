"""Duplicate suppression across transactions (``duplicate_window``), including across a restart."""

from __future__ import annotations

import os
import re
import smtplib
import sqlite3
import subprocess
import sys
import time

from tests.clients import Client, Reply
from tests.conftest import basic_config
from tests.policy.helpers import MESSAGE, SENDER, maildir_messages


def _replies(server, recipients: list[str], message: bytes = MESSAGE) -> list[Reply]:
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        for recipient in recipients:
            assert client.cmd(f"RCPT TO:<{recipient}>").code == 250
        return client.data(message, replies=len(recipients))


def send(server, recipients: list[str], message: bytes = MESSAGE) -> list[tuple[int, str]]:
    return [(d.code, d.enhanced) for d in _replies(server, recipients, message)]


def count(tmp_path, user: str) -> int:
    return len(maildir_messages(tmp_path / "mail" / "example.test" / user / "Maildir"))


def test_same_message_id_is_stored_once_per_recipient_even_after_a_restart(start_mda, tmp_path):
    config = basic_config(tmp_path / "mail", duplicate_window="1d", state_dir=str(tmp_path / "state"))
    server = start_mda(config)
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert send(server, ["alice@example.test", "bob@example.test"]) == [(250, "2.0.0")] * 2
    assert (count(tmp_path, "alice"), count(tmp_path, "bob")) == (1, 1)
    server.stop()
    restarted = start_mda(config)
    assert send(restarted, ["bob@example.test", "alice@example.test"]) == [(250, "2.0.0")] * 2
    assert (count(tmp_path, "alice"), count(tmp_path, "bob")) == (1, 1)
    other = MESSAGE.replace(b"<m1@remote.test>", b"<m2@remote.test>")
    assert send(restarted, ["alice@example.test"], other) == [(250, "2.0.0")]
    assert count(tmp_path, "alice") == 2
    assert (tmp_path / "state" / "duplicates.sqlite").exists()
    with smtplib.SMTP(*restarted.smtp) as client:
        assert client.sendmail(SENDER, ["alice@example.test", "carol@example.test"], MESSAGE) == {}
    assert (count(tmp_path, "alice"), count(tmp_path, "carol")) == (2, 1)


def test_without_window_or_message_id_every_copy_is_stored(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail"))
    send(server, ["alice@example.test"])
    send(server, ["alice@example.test"])
    assert count(tmp_path, "alice") == 2
    windowed = start_mda(basic_config(tmp_path / "mail", duplicate_window="1h", state_dir=str(tmp_path / "st")))
    no_id = b"Subject: no id\r\n\r\nbody\r\n"
    send(windowed, ["bob@example.test"], no_id)
    send(windowed, ["bob@example.test"], no_id)
    assert count(tmp_path, "bob") == 2


def test_default_state_dir_is_under_the_storage_root(start_mda, tmp_path):
    server = start_mda(basic_config(tmp_path / "mail", duplicate_window="1h"))
    send(server, ["alice@example.test"])
    assert (tmp_path / "mail" / ".mda-state" / "duplicates.sqlite").exists()


def test_only_a_committed_record_suppresses(start_mda, tmp_path):
    """A pending record (claimed, copy not yet committed) never suppresses: one whose owner on this host
    is dead, or older than the lease, lets the retry deliver; a live one of another delivery answers
    451 4.3.0 (the MX retries); a committed one suppresses. SMTP shares the 451 with every recipient."""
    state = tmp_path / "state"
    server = start_mda(basic_config(tmp_path / "mail", duplicate_window="1d", state_dir=str(state)))
    assert send(server, ["alice@example.test"], MESSAGE.replace(b"<m1@", b"<warmup@")) == [(250, "2.0.0")]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now, host = time.time(), os.uname().nodename
    with sqlite3.connect(state / "duplicates.sqlite") as db:
        db.executemany(
            "INSERT INTO mda_duplicates VALUES (?, 'alice@example.test', ?, ?, ?)",
            [
                ("<dead@remote.test>", "pending", f"{host}:{dead.pid}:x", now),
                ("<old@remote.test>", "pending", "elsewhere:1:x", now - 3600),
                ("<live@remote.test>", "pending", "elsewhere:1:x", now),
                ("<done@remote.test>", "committed", "elsewhere:1:x", now),
            ],
        )
    for name, reply in (
        ("dead", (250, "2.0.0")),
        ("old", (250, "2.0.0")),
        ("live", (451, "4.3.0")),
        ("done", (250, "2.0.0")),
    ):
        assert send(server, ["alice@example.test"], MESSAGE.replace(b"<m1@", f"<{name}@".encode())) == [reply]
    assert count(tmp_path, "alice") == 3  # warmup, dead, old
    live = MESSAGE.replace(b"<m1@", b"<live@")
    with smtplib.SMTP(*server.smtp) as client:
        try:
            client.sendmail(SENDER, ["alice@example.test", "bob@example.test"], live)
        except smtplib.SMTPDataError as error:
            assert (error.smtp_code, error.smtp_error[:5]) == (451, b"4.3.0")
        else:
            raise AssertionError("a held recipient must defer the SMTP transaction")
    assert (count(tmp_path, "alice"), count(tmp_path, "bob")) == (3, 1)


def test_a_state_store_that_fails_delivers_and_logs(start_mda, tmp_path):
    """``state_dir`` cannot be created (a file is in the way): suppression is off for the message, the
    copy is stored (a duplicate at worst, never a bounce) and ``state_error`` is logged."""
    (tmp_path / "blocker").write_text("not a directory")
    server = start_mda(
        basic_config(tmp_path / "mail", duplicate_window="1d", state_dir=str(tmp_path / "blocker" / "state"))
    )
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert count(tmp_path, "alice") == 2
    assert "record=duplicate" in server.wait_for_log("event=state_error")


def test_saved_replies_name_the_queue_id_and_in_lmtp_the_recipient(start_mda, tmp_path):
    """The success text MTAs log (Postfix: ``status=sent (250 2.0.0 <alice@…> ID Saved)``), the same
    whether the copy was stored now or earlier, and SMTP's single reply without a recipient."""
    server = start_mda(basic_config(tmp_path / "mail", duplicate_window="1d", state_dir=str(tmp_path / "state")))
    [stored] = [r.text for r in _replies(server, ["alice@example.test"])]
    assert re.fullmatch(r"2\.0\.0 <alice@example\.test> [0-9A-Z]+ Saved", stored), stored
    [again, fresh] = [r.text for r in _replies(server, ["alice@example.test", "bob@example.test"])]
    assert re.fullmatch(r"2\.0\.0 <alice@example\.test> [0-9A-Z]+ Saved \(duplicate, not stored again\)", again), again
    assert re.fullmatch(r"2\.0\.0 <bob@example\.test> [0-9A-Z]+ Saved", fresh), fresh
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        client.rcpt("carol@example.test")
        code, text = client.data(MESSAGE)
    assert code == 250 and re.fullmatch(r"2\.0\.0 [0-9A-Z]+ Saved", text.decode()), text
