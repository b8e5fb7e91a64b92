"""A RCPT answer built from userdb answers is reused only while those answers stay in the userdb cache:
``ttl: 0`` asks the database for every RCPT, and a short ``ttl`` bounds how long a removed user is still
accepted (the reuse of whole policy answers never stretches it)."""

from __future__ import annotations

import sqlite3

from tests.userdb.helpers import USER_QUERY, deliver, messages, rcpt_codes, sqlite_db, userdb_config
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")


def _deactivate(db, address: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE mailbox SET active = 0 WHERE username = ?", (address,))
    connection.close()


def test_without_cache_every_rcpt_sees_the_database(start_mda, tmp_path):
    db = sqlite_db(tmp_path / "pfa.sqlite", [("dave@example.test", "example.test/dave/", 0)], [])
    source = {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY, "path_base": str(tmp_path / "v")}
    server = start_mda(userdb_config(tmp_path / "mail", [source], userdb_cache={"ttl": 0, "negative_ttl": 0}))
    assert rcpt_codes(server.lmtp, ["dave@example.test", "dave@example.test"]) == [OK, OK]
    _deactivate(db, "dave@example.test")
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [UNKNOWN]


def test_a_changed_row_moves_the_next_delivery(start_mda, tmp_path):
    """Mailboxes built from a row are kept between RCPTs, keyed on the row's values: with ``ttl: 0``, a
    new maildir and a quota in the row apply to the very next delivery."""
    db = sqlite_db(tmp_path / "pfa.sqlite", [("dave@example.test", "example.test/dave/", 0)], [])
    base = tmp_path / "v"
    source = {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY, "path_base": str(base)}
    server = start_mda(userdb_config(tmp_path / "mail", [source], workers=1))
    assert deliver(server.lmtp, ["dave@example.test"]) == [OK, (250, "2.0.0")]
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE mailbox SET maildir = 'example.test/dave2/', quota = 1 WHERE username = 'dave@example.test'"
        )
    connection.close()
    assert deliver(server.lmtp, ["dave@example.test"]) == [OK, (552, "5.2.2")], "the row's new quota applies"
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE mailbox SET quota = 0 WHERE username = 'dave@example.test'")
    connection.close()
    assert deliver(server.lmtp, ["dave@example.test"]) == [OK, (250, "2.0.0")]
    old, new = base / "example.test" / "dave", base / "example.test" / "dave2"
    assert (len(messages(old)), len(messages(new))) == (1, 1)


def test_a_removed_user_is_refused_once_the_cached_answer_expires(start_mda, tmp_path):
    db = sqlite_db(tmp_path / "pfa.sqlite", [("dave@example.test", "example.test/dave/", 0)], [])
    source = {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY, "path_base": str(tmp_path / "v")}
    # The cache is per process: with one, the second RCPT is surely answered from it.
    cache = {"ttl": "2s", "negative_ttl": "2s"}
    server = start_mda(userdb_config(tmp_path / "mail", [source], userdb_cache=cache, workers=1))
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    _deactivate(db, "dave@example.test")
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]  # the cached answer, and the reused RCPT answer
    # Within the 2 s ttl (and the machine's delays), long before the 30 s for which answers are reused.
    wait_for(lambda: rcpt_codes(server.lmtp, ["dave@example.test"]) == [UNKNOWN], 15, what="dave refused")
