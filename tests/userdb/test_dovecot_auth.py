"""The dovecot driver against a private Dovecot's auth-userdb socket: found, not found, Dovecot's
``mail``/``quota_rule`` fields, Dovecot stopped (451, then recovery), and hostile addresses."""

from __future__ import annotations

import time

import pytest

from tests.peers.dovecot import DovecotSetup, DovecotUser, dovecot_factory  # noqa: F401 (fixture)
from tests.userdb.helpers import deliver, messages, rcpt_codes, userdb_config
from tests.userdb.test_postgresql import INJECTION_TABLE
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")
DEFERRED = (451, "4.3.0")


@pytest.mark.root
def test_dovecot_auth_userdb(start_mda, tmp_path, dovecot_factory: DovecotSetup):  # noqa: F811
    root = dovecot_factory.mail_root
    users = [
        DovecotUser.maildir("dave@example.test", root / "dave"),
        DovecotUser.mbox("erin@example.test", root / "erin"),
        DovecotUser.maildir("o'brien@example.test", root / "obrien"),
        DovecotUser.maildir("jürgen@example.test", root / "juergen"),
    ]
    dovecot = dovecot_factory.start(users)
    socket_path = dovecot.directory / "run" / "auth-userdb"
    source = {"driver": "dovecot", "socket": str(socket_path), "timeout": "2s"}
    server = start_mda(userdb_config(tmp_path / "mail", [source]))
    assert rcpt_codes(server.lmtp, ["dave@example.test", "nobody@example.test", "alice@example.test"]) == [
        OK,
        UNKNOWN,
        OK,
    ]
    assert deliver(server.lmtp, ["dave@example.test", "erin@example.test"])[-2:] == [(250, "2.0.0")] * 2
    assert len(messages(root / "dave" / "Maildir")) == 1
    assert (root / "erin" / "mbox").read_bytes().startswith(b"From sender@remote.test ")
    # Files belong to the uid/gid Dovecot answered, so Dovecot can read them.
    assert (root / "dave" / "Maildir").stat().st_uid == dovecot_factory.owner[0]
    # Dovecot's default auth_username_chars refuses ' and non-ASCII names: not found, as Dovecot decides.
    expected = {**dict(INJECTION_TABLE), "o'brien@example.test": UNKNOWN, "jürgen@example.test": UNKNOWN}
    addresses = list(expected)
    got = rcpt_codes(server.lmtp, addresses, smtputf8=True)
    assert dict(zip(addresses, got, strict=True)) == expected
    dovecot.stop()
    assert rcpt_codes(server.lmtp, ["erin@example.test", "alice@example.test"]) == [DEFERRED, OK]
    assert "driver=dovecot" in server.wait_for_log("event=userdb_error")
    dovecot_factory.start(users)
    started = time.monotonic()
    wait_for(lambda: rcpt_codes(server.lmtp, ["erin@example.test"]) == [OK], timeout=20, interval=0.2)
    assert time.monotonic() - started < 20
