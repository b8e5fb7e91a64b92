"""The sql driver against a private MariaDB (PyMySQL): Postfixadmin's tables, the injection table, and
the server killed mid-run (451 4.3.0, then recovery without restarting mda)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.mariadb import PASSWORD, MariaDB, mariadb_server
from tests.userdb.helpers import deliver, messages, rcpt_codes, userdb_config
from tests.userdb.test_postgresql import HOSTILE_ROW, INJECTION_TABLE
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")
DEFERRED = (451, "4.3.0")

SCHEMA = """
CREATE TABLE mail.mailbox (username VARCHAR(255) PRIMARY KEY, maildir VARCHAR(255), quota BIGINT, active TINYINT)
  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE TABLE mail.alias (address VARCHAR(255) PRIMARY KEY, goto TEXT, active TINYINT)
  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
INSERT INTO mail.mailbox VALUES ('dave@example.test', 'example.test/dave/', 0, 1),
  ('erin@example.test', 'example.test/erin/', 0, 1), ('{hostile}', 'example.test/obrien/', 0, 1),
  ('jürgen@example.test', 'example.test/juergen/', 0, 1);
INSERT INTO mail.alias VALUES ('team@example.test', 'dave@example.test,erin@example.test,x@remote.test', 1);
"""


@pytest.fixture(scope="module")
def maria() -> Iterator[MariaDB]:
    with mariadb_server() as server:
        server.sql(SCHEMA.replace("{hostile}", HOSTILE_ROW.replace("'", "''")))
        yield server


def _source(maria: MariaDB, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    password_file = tmp_path / "db-password"
    password_file.write_text(PASSWORD)
    return {
        "driver": "sql",
        "url": maria.url,
        "password_file": str(password_file),
        "user_query": "SELECT maildir AS path, quota FROM mailbox WHERE username = :address AND active = 1",
        "alias_query": "SELECT goto FROM alias WHERE address = :address AND active = 1",
        "path_base": str(tmp_path / "vmail"),
        "timeout": "2s",
        **extra,
    }


@pytest.mark.root
def test_mysql_users_aliases_and_injection(start_mda, tmp_path, maria):
    server = start_mda(userdb_config(tmp_path / "mail", [_source(maria, tmp_path)]))
    assert rcpt_codes(server.lmtp, ["dave@example.test", "nobody@example.test", "alice@example.test"]) == [
        OK,
        UNKNOWN,
        OK,
    ]
    assert deliver(server.lmtp, ["team@example.test"]) == [OK, (250, "2.0.0")]
    assert len(messages(tmp_path / "vmail" / "example.test" / "erin")) == 1
    addresses = [address for address, _ in INJECTION_TABLE]
    got = rcpt_codes(server.lmtp, addresses, smtputf8=True)
    assert dict(zip(addresses, got, strict=True)) == dict(INJECTION_TABLE)
    assert "event=userdb_error" not in server.log()


@pytest.mark.root
def test_mysql_killed_mid_run_defers_then_recovers(start_mda, tmp_path, maria):
    server = start_mda(userdb_config(tmp_path / "mail", [_source(maria, tmp_path)]))
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    maria.kill()
    try:
        assert rcpt_codes(server.lmtp, ["erin@example.test", "alice@example.test"]) == [DEFERRED, OK]
        log = server.wait_for_log("event=userdb_error")
        assert "driver=sql" in log and PASSWORD not in log
    finally:
        maria.start()
    wait_for(lambda: rcpt_codes(server.lmtp, ["erin@example.test"]) == [OK], timeout=30, interval=0.3)
