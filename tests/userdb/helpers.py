"""Shared pieces of the userdb tests: a configuration with userdb sources, and RCPT round trips."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.clients import Client
from tests.conftest import basic_config

SENDER = "sender@remote.test"
MESSAGE = b"From: sender@remote.test\r\nSubject: userdb\r\nMessage-ID: <u1@remote.test>\r\n\r\nbody\r\n"

POSTFIXADMIN_SCHEMA = """
CREATE TABLE mailbox (username TEXT PRIMARY KEY, maildir TEXT, quota INTEGER, active INTEGER);
CREATE TABLE alias (address TEXT PRIMARY KEY, goto TEXT, active INTEGER);
"""
USER_QUERY = "SELECT maildir AS path, quota FROM mailbox WHERE username = :address AND active = 1"
ALIAS_QUERY = "SELECT goto FROM alias WHERE address = :address AND active = 1"


def userdb_config(root: Path, sources: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """``example.test`` with one users: entry (alice) and the given userdb sources; cache off by default."""
    config = basic_config(root, users={"alice@example.test": {}}, userdb=sources)
    config["domains"] = ["example.test", "other.test"]
    config["userdb_cache"] = {"ttl": 0, "negative_ttl": 0}
    config.update(overrides)
    return config


def sqlite_db(path: Path, mailboxes: Sequence[tuple[str, str, int]], aliases: Sequence[tuple[str, str]]) -> Path:
    """A Postfixadmin-shaped SQLite database: (username, maildir, quota) rows and (address, goto) rows."""
    with sqlite3.connect(path) as db:
        db.executescript(POSTFIXADMIN_SCHEMA)
        db.executemany("INSERT INTO mailbox VALUES (?, ?, ?, 1)", mailboxes)
        db.executemany("INSERT INTO alias VALUES (?, ?, 1)", aliases)
    db.close()
    return path


def rcpt_codes(address: tuple[str, int], recipients: Sequence[str], *, smtputf8: bool = False) -> list[tuple[int, str]]:
    """(code, enhanced) of each RCPT in one LMTP transaction."""
    with Client(address) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>" + (" SMTPUTF8" if smtputf8 else ""))
        codes = []
        for recipient in recipients:
            reply = client.cmd(f"RCPT TO:<{recipient}>")
            codes.append((reply.code, reply.enhanced))
        client.cmd("QUIT")
    return codes


def deliver(address: tuple[str, int], recipients: Sequence[str]) -> list[tuple[int, str]]:
    """RCPT each recipient, then DATA if any was accepted: the RCPT replies then the DATA replies."""
    with Client(address) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        codes = []
        for recipient in recipients:
            reply = client.cmd(f"RCPT TO:<{recipient}>")
            codes.append((reply.code, reply.enhanced))
        accepted = sum(1 for code, _ in codes if code == 250)
        if accepted:
            codes += [(r.code, r.enhanced) for r in client.data(MESSAGE, replies=accepted)]
        client.cmd("QUIT")
    return codes


def messages(maildir: Path) -> list[Path]:
    return sorted(p for p in maildir.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))
