"""The sql driver against a private PostgreSQL: Postfixadmin's tables, a server killed and stalled
mid-run (451 4.3.0, then recovery without restarting mda), metrics, and the injection table that also
runs against SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import Client
from tests.ops.helpers import scrape, value
from tests.peers.postgres import PASSWORD, PostgresServer, postgres_server
from tests.userdb.helpers import deliver, messages, rcpt_codes, userdb_config
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")
DEFERRED = (451, "4.3.0")

PG_SCHEMA = """
CREATE TABLE mailbox (username text PRIMARY KEY, maildir text, quota bigint, active boolean);
CREATE TABLE alias (address text PRIMARY KEY, goto text, active boolean);
"""
PG_USER_QUERY = "SELECT maildir AS path, quota FROM mailbox WHERE username = :address AND active"
PG_ALIAS_QUERY = "SELECT goto FROM alias WHERE address = :address AND active"

HOSTILE_ROW = "o'brien@example.test"
"""Stored as a user: a quote is ordinary atext (RFC 5321), and must match itself only."""
INJECTION_TABLE: list[tuple[str, tuple[int, str]]] = [
    ("o'brien@example.test", OK),
    ("\"x' OR '1'='1\"@example.test", UNKNOWN),
    ("x'--@example.test", UNKNOWN),
    ('"x\\"; DROP TABLE mailbox; --"@example.test', UNKNOWN),
    ('"back\\\\slash"@example.test', UNKNOWN),
    ("*@example.test", UNKNOWN),
    ("dave*@example.test", UNKNOWN),
    ('"(dave)"@example.test', UNKNOWN),
    ('"dave)(uid=*"@example.test', UNKNOWN),
    ("%@example.test", UNKNOWN),
    ("da%@example.test", UNKNOWN),
    ("_ave@example.test", UNKNOWN),
    ('"x:address"@example.test', UNKNOWN),
    ('"%(address)s"@example.test', UNKNOWN),
    ("jürgen@example.test", OK),
    ("dävé@example.test", UNKNOWN),
    ("dave@example.test", OK),
]
"""Each address and the reply it must get: a changed query would answer 250 (matched another row) or
451 (a syntax error); every hostile value is looked up as itself. ``LIKE`` wildcards stay literal with
``=``; an operator who writes ``LIKE :address`` asks for pattern matching."""


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        server.sql(PG_SCHEMA)
        server.sql("GRANT SELECT ON mailbox, alias TO mda")  # mda reads, never writes
        yield server


def _pg_rows(pg: PostgresServer, mailboxes: list[tuple[str, str, int]], aliases: list[tuple[str, str]]) -> None:
    pg.sql("TRUNCATE mailbox, alias")
    for username, maildir, quota in mailboxes:
        pg.sql(f"INSERT INTO mailbox VALUES ($q${username}$q$, $q${maildir}$q$, {quota}, true)")
    for address, goto in aliases:
        pg.sql(f"INSERT INTO alias VALUES ($q${address}$q$, $q${goto}$q$, true)")


def _pg_source(pg: PostgresServer, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    password_file = tmp_path / "db-password"
    password_file.write_text(PASSWORD + "\n")
    return {
        "driver": "sql",
        "url": pg.url,
        "password_file": str(password_file),
        "user_query": PG_USER_QUERY,
        "alias_query": PG_ALIAS_QUERY,
        "path_base": str(tmp_path / "vmail"),
        **extra,
    }


@pytest.mark.root
def test_postgresql_users_aliases_and_metrics(start_mda, tmp_path, pg):
    _pg_rows(
        pg,
        [("dave@example.test", "example.test/dave/", 0), ("erin@example.test", "example.test/erin/", 0)],
        [("dave@example.test", "dave@example.test"), ("team@example.test", "dave@example.test,erin@example.test")],
    )
    config = userdb_config(
        tmp_path / "mail",
        [_pg_source(pg, tmp_path)],
        metrics={"bind": "127.0.0.1:0"},
        userdb_cache={"ttl": "1h", "negative_ttl": "1h"},
        workers=1,  # the cache is per process: one process, so the counts below are the cache's
    )
    server = start_mda(config)
    assert rcpt_codes(server.lmtp, ["dave@example.test", "nobody@example.test", "alice@example.test"]) == [
        OK,
        UNKNOWN,
        OK,
    ]
    assert deliver(server.lmtp, ["team@example.test"]) == [OK, (250, "2.0.0")]
    vmail = tmp_path / "vmail" / "example.test"
    assert len(messages(vmail / "dave")) == 1 and len(messages(vmail / "erin")) == 1
    # Asked again: answered from the cache, the database is not asked.
    rcpt_codes(server.lmtp, ["dave@example.test", "nobody@example.test"])
    samples = scrape(server)
    # Sent to PostgreSQL: dave, nobody, team, erin. From the cache: dave (as team's target), dave, nobody.
    assert value(samples, "mda_userdb_lookups_total", driver="sql", result="hit") == 3
    assert value(samples, "mda_userdb_lookups_total", driver="sql", result="miss") == 1
    assert value(samples, "mda_userdb_lookups_total", driver="sql", result="error") == 0
    assert value(samples, "mda_userdb_cache_total", result="hit") == 3
    assert value(samples, "mda_userdb_cache_total", result="miss") == 4
    assert value(samples, "mda_userdb_lookup_seconds_count", driver="sql") == 4


@pytest.mark.root
def test_postgresql_killed_mid_run_defers_then_recovers(start_mda, tmp_path, pg):
    _pg_rows(pg, [("dave@example.test", "example.test/dave/", 0)], [])
    config = userdb_config(tmp_path / "mail", [_pg_source(pg, tmp_path, timeout="2s")], metrics={"bind": "127.0.0.1:0"})
    server = start_mda(config)
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    pg.kill()
    try:
        # Same transaction: the userdb recipient is deferred, the users: one delivered.
        assert deliver(server.lmtp, ["dave@example.test", "alice@example.test"]) == [DEFERRED, OK, (250, "2.0.0")]
        log = server.wait_for_log("event=userdb_error")
        assert "driver=sql" in log and "recipient=dave@example.test" in log and "reason=" in log
        assert PASSWORD not in log
        assert value(scrape(server), "mda_userdb_lookups_total", driver="sql", result="error") >= 1
        assert value(scrape(server), "mda_rcpt_refused_total", enhanced="4.3.0") >= 1
    finally:
        pg.start()
    wait_for(lambda: rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK], timeout=20, interval=0.3)
    assert len(messages(tmp_path / "mail" / "example.test" / "alice")) == 1


@pytest.mark.root
def test_postgresql_stalled_times_out_then_recovers(start_mda, tmp_path, pg):
    _pg_rows(pg, [("dave@example.test", "example.test/dave/", 0)], [])
    config = userdb_config(tmp_path / "mail", [_pg_source(pg, tmp_path, timeout="1s")])
    server = start_mda(config)
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    pg.pause()
    try:
        # While one session waits on the stalled server, another is served at once: no look-up
        # blocks the event loop.
        with Client(server.lmtp) as waiting:
            waiting.cmd("LHLO client.test")
            waiting.cmd("MAIL FROM:<sender@remote.test>")
            waiting.send(b"RCPT TO:<erin@example.test>\r\n")
            started = time.monotonic()
            assert rcpt_codes(server.lmtp, ["alice@example.test"]) == [OK]
            other_session = time.monotonic() - started
            assert other_session < 0.5, other_session
            reply = waiting.read_reply()
            assert (reply.code, reply.enhanced) == DEFERRED
            assert time.monotonic() - started < 5
        started = time.monotonic()
        assert rcpt_codes(server.lmtp, ["dave@example.test", "alice@example.test"]) == [DEFERRED, OK]
        elapsed = time.monotonic() - started
        assert elapsed < 5, elapsed
        assert "no answer within 1s" in server.wait_for_log("no answer within")
    finally:
        pg.resume()
    wait_for(lambda: rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK], timeout=20, interval=0.3)


@pytest.mark.root
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_injection_table(start_mda, tmp_path, backend, request):
    users = [("dave@example.test", "example.test/dave/", 0), (HOSTILE_ROW, "example.test/obrien/", 0)]
    users.append(("jürgen@example.test", "example.test/juergen/", 0))
    if backend == "postgresql":
        pg = request.getfixturevalue("pg")
        _pg_rows(pg, users, [])
        source = _pg_source(pg, tmp_path)
    else:
        db = tmp_path / "pfa.sqlite"
        with sqlite3.connect(db) as connection:
            connection.executescript(PG_SCHEMA.replace("boolean", "integer").replace("bigint", "integer"))
            connection.executemany("INSERT INTO mailbox VALUES (?, ?, ?, 1)", users)
        connection.close()
        source = {
            "driver": "sql",
            "url": f"sqlite:///{db}",
            "user_query": PG_USER_QUERY.replace("AND active", "AND active = 1"),
            "alias_query": PG_ALIAS_QUERY.replace("AND active", "AND active = 1"),
            "path_base": str(tmp_path / "vmail"),
        }
    server = start_mda(userdb_config(tmp_path / "mail", [source]))
    addresses = [address for address, _ in INJECTION_TABLE]
    got = rcpt_codes(server.lmtp, addresses, smtputf8=True)
    assert dict(zip(addresses, got, strict=True)) == dict(INJECTION_TABLE)
    # NUL never reaches a query: the session refuses the command line itself.
    assert rcpt_codes(server.lmtp, ["dave\0@example.test"]) == [(500, "5.5.2")]
    # The tables are intact and nothing was answered from a changed query.
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    assert "event=userdb_error" not in server.log()
