"""userdb sources that need no server: Dovecot passwd-file and SQLite, through real RCPTs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from tests.userdb.helpers import ALIAS_QUERY, USER_QUERY, deliver, messages, rcpt_codes, sqlite_db, userdb_config
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")
DEFERRED = (451, "4.3.0")


def test_passwd_file_users_with_dovecot_fields(start_mda, tmp_path):
    root = tmp_path / "mail"
    homes = tmp_path / "homes"
    users = tmp_path / "dovecot-users"
    users.write_text(
        "# docker-mailserver style\n"
        f"dave@example.test:{{SHA512-CRYPT}}$6$x:5000:5000::{homes}/dave::userdb_mail=maildir:~/Maildir "
        "userdb_quota_rule=*:storage=1K\n"
        f"erin@example.test:{{PLAIN}}secret::::{homes}/erin::userdb_mail=mbox:~/mbox\n"
        "\n"
    )
    server = start_mda(userdb_config(root, [{"driver": "passwd-file", "path": str(users)}]))
    assert rcpt_codes(server.lmtp, ["Dave@example.test", "nobody@example.test", "alice@example.test"]) == [
        OK,
        UNKNOWN,
        OK,
    ]
    assert deliver(server.lmtp, ["dave+box@example.test", "erin@example.test"])[-2:] == [(250, "2.0.0")] * 2
    assert len(messages(homes / "dave" / "Maildir")) == 1
    assert (homes / "erin" / "mbox").read_bytes().startswith(b"From sender@remote.test ")
    # quota_rule=*:storage=1K is 1024 bytes (Dovecot reads storage= in kilobytes).
    with_size = subprocess.run(
        [
            sys.executable,
            "-m",
            "mda",
            "resolve",
            "--config",
            str(server.config_path),
            "--size",
            "2048",
            "dave@example.test",
        ],
        capture_output=True,
        text=True,
    )
    assert "552 5.2.2" in with_size.stdout, with_size.stdout
    # Edited file: a new user is found without a reload (the file is checked at most once a second).
    with users.open("a") as stream:
        stream.write(f"frank@example.test:x::::{homes}/frank::userdb_mail=maildir:~/Maildir\n")
    wait_for(lambda: rcpt_codes(server.lmtp, ["frank@example.test"]) == [OK], what="frank found", interval=0.2)


def test_unreadable_passwd_file_defers_then_recovers(start_mda, tmp_path):
    users = tmp_path / "dovecot-users"
    server = start_mda(userdb_config(tmp_path / "mail", [{"driver": "passwd-file", "path": str(users)}]))
    # Missing file: the source cannot answer; users: entries are unaffected.
    assert rcpt_codes(server.lmtp, ["dave@example.test", "alice@example.test"]) == [DEFERRED, OK]
    log = server.wait_for_log("event=userdb_error")
    assert "driver=passwd-file" in log and "reason=" in log
    users.write_text(f"dave@example.test:x::::{tmp_path}/h/dave\n")
    wait_for(lambda: rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK], what="dave found", interval=0.2)


def test_sqlite_postfixadmin_users_and_aliases(start_mda, tmp_path):
    root = tmp_path / "mail"
    vmail = tmp_path / "vmail"
    db = sqlite_db(
        tmp_path / "pfa.sqlite",
        [("dave@example.test", "example.test/dave/", 0), ("erin@example.test", "example.test/erin/", 1024)],
        [
            ("dave@example.test", "dave@example.test"),
            ("erin@example.test", "erin@example.test"),
            ("team@example.test", "dave@example.test, erin@example.test,someone@remote.test, alice@example.test"),
            ("fwd@example.test", "someone@remote.test"),
            ("broken@example.test", "broken@example.test"),
        ],
    )
    source = {
        "driver": "sql",
        "url": f"sqlite:///{db}",
        "user_query": USER_QUERY,
        "alias_query": ALIAS_QUERY,
        "path_base": str(vmail),
    }
    server = start_mda(userdb_config(root, [source]))
    codes = rcpt_codes(
        server.lmtp,
        ["dave@example.test", "DAVE+x@Example.Test", "nobody@example.test", "fwd@example.test", "broken@example.test"],
    )
    assert codes == [OK, OK, UNKNOWN, UNKNOWN, UNKNOWN]
    # Alias fan-out: two userdb mailboxes and one users: entry; the remote target is left to the MTA.
    assert deliver(server.lmtp, ["team@example.test"]) == [OK, (250, "2.0.0")]
    assert len(messages(vmail / "example.test" / "dave")) == 1
    assert len(messages(vmail / "example.test" / "erin")) == 1
    assert len(messages(root / "example.test" / "alice" / "Maildir")) == 1
    resolved = subprocess.run(
        [sys.executable, "-m", "mda", "resolve", "--config", str(server.config_path), "team@example.test"],
        capture_output=True,
        text=True,
    )
    assert resolved.returncode == 0
    assert f"userdb sql sqlite:///{db}: team@example.test: goto=" in resolved.stdout
    assert "alias target someone@remote.test: domain not ours, skipped" in resolved.stdout
    # Quota from the row (1024 bytes): a 2 KiB SIZE is refused at RCPT.
    with_size = subprocess.run(
        [
            sys.executable,
            "-m",
            "mda",
            "resolve",
            "--config",
            str(server.config_path),
            "--size",
            "2048",
            "erin@example.test",
        ],
        capture_output=True,
        text=True,
    )
    assert "552 5.2.2" in with_size.stdout


def test_garbage_rows_defer_and_never_bounce(start_mda, tmp_path):
    db = tmp_path / "bad.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE u (address TEXT, path TEXT, quota TEXT, uid INTEGER)")
        connection.executemany(
            "INSERT INTO u VALUES (?, ?, ?, ?)",
            [
                ("rel@example.test", "relative/path", None, None),
                ("dots@example.test", "/var/vmail/../etc", None, None),
                ("quota@example.test", "/v/q", "lots", None),
                ("root@example.test", "/v/r", None, 0),
                ("twice@example.test", "/v/1", None, None),
                ("twice@example.test", "/v/2", None, None),
                ("good@example.test", f"{tmp_path}/v/good", "1M", None),
            ],
        )
    connection.close()
    query = "SELECT path, quota, uid FROM u WHERE address = :address"
    server = start_mda(
        userdb_config(tmp_path / "mail", [{"driver": "sql", "url": f"sqlite:///{db}", "user_query": query}])
    )
    recipients = ["rel", "dots", "quota", "root", "twice", "good", "alice"]
    codes = rcpt_codes(server.lmtp, [f"{r}@example.test" for r in recipients])
    assert codes == [DEFERRED] * 5 + [OK, OK]


def test_failing_first_source_never_lets_a_later_one_decide(start_mda, tmp_path):
    users = tmp_path / "users"
    users.write_text(f"dave@example.test:x::::{tmp_path}/h/dave\n")
    sources = [
        {"driver": "sql", "url": f"sqlite:///{tmp_path}/missing.sqlite", "user_query": USER_QUERY},
        {"driver": "passwd-file", "path": str(users)},
    ]
    server = start_mda(userdb_config(tmp_path / "mail", sources))
    assert rcpt_codes(server.lmtp, ["dave@example.test", "alice@example.test"]) == [DEFERRED, OK]
    log = server.wait_for_log("event=userdb_error")
    assert "driver=sql" in log


def test_cache_ttls_and_reload_that_changes_the_query(start_mda, tmp_path):
    db = sqlite_db(tmp_path / "pfa.sqlite", [("dave@example.test", "example.test/dave/", 0)], [])
    source = {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY, "path_base": str(tmp_path / "v")}
    # One process: the userdb cache is per worker (README "Workers"), and this is about that cache.
    config = userdb_config(tmp_path / "mail", [source], userdb_cache={"ttl": "1h", "negative_ttl": "1h"}, workers=1)
    server = start_mda(config, args=())
    assert rcpt_codes(server.lmtp, ["dave@example.test", "erin@example.test"]) == [OK, UNKNOWN]
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE mailbox SET active = 0 WHERE username = 'dave@example.test'")
        connection.execute("INSERT INTO mailbox VALUES ('erin@example.test', 'example.test/erin/', 0, 1)")
    connection.close()
    # Both answers come from the cache for an hour...
    assert rcpt_codes(server.lmtp, ["dave@example.test", "erin@example.test"]) == [OK, UNKNOWN]
    # ...until a reload: new sources, empty cache; here the query changes too (active rows are ignored).
    source["user_query"] = "SELECT maildir AS path FROM mailbox WHERE username = :address"
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.signal(__import__("signal").SIGHUP)
    server.wait_for_log("event=reloaded")
    assert rcpt_codes(server.lmtp, ["dave@example.test", "erin@example.test"]) == [OK, OK]


def test_check_config_connect_and_errors(tmp_path):
    db = sqlite_db(tmp_path / "pfa.sqlite", [], [])
    config = userdb_config(
        tmp_path / "mail",
        [
            {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY},
            {"driver": "passwd-file", "path": str(tmp_path / "missing")},
        ],
    )
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ}
    run = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(path), "--connect"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 1, run
    assert f"userdb sql sqlite:///{db}: ok" in run.stdout
    assert f"userdb passwd-file {tmp_path}/missing: cannot read" in run.stdout
    printed = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(path), "--print"], capture_output=True, text=True
    )
    assert printed.returncode == 0 and "user_query: SELECT maildir AS path" in printed.stdout
    again_path = tmp_path / "printed.yaml"
    again_path.write_text(printed.stdout)
    again = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(again_path), "--print"],
        capture_output=True,
        text=True,
    )
    assert again.stdout == printed.stdout
    for bad, message in (
        ({"driver": "nosuch"}, "driver must be one of"),
        (
            {"driver": "sql", "url": "sqlite:///x", "user_query": "SELECT 1 WHERE a = :user"},
            "unknown placeholder :user",
        ),
        ({"driver": "sql", "url": "oracle://x/y", "user_query": USER_QUERY}, "url must start with"),
        ({"driver": "passwd-file", "path": "/x", "colour": 1}, "unknown key 'colour'"),
    ):
        path.write_text(yaml.safe_dump({**config, "userdb": [bad]}))
        run = subprocess.run(
            [sys.executable, "-m", "mda", "check-config", "--config", str(path)], capture_output=True, text=True
        )
        assert run.returncode == 1 and message in run.stderr, (bad, run.stderr)


def test_contrib_examples_are_valid():
    examples = sorted((Path(__file__).parents[2] / "contrib" / "userdb").glob("*.yaml"))
    assert len(examples) >= 4
    for example in examples:
        run = subprocess.run(
            [sys.executable, "-m", "mda", "check-config", "--config", str(example)], capture_output=True, text=True
        )
        assert run.returncode == 0, (example, run.stderr)


def test_lda_mode_uses_userdb_and_defers_on_failure(tmp_path):
    db = sqlite_db(tmp_path / "pfa.sqlite", [("dave@example.test", "example.test/dave/", 0)], [])
    source = {"driver": "sql", "url": f"sqlite:///{db}", "user_query": USER_QUERY, "path_base": str(tmp_path / "v")}
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(userdb_config(tmp_path / "mail", [source])))
    message = b"From: a@remote.test\nSubject: lda\n\nbody\n"

    def deliver_lda(recipient: str) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "mda", "deliver", "--config", str(path), "-f", "a@remote.test", recipient]
        return subprocess.run(command, input=message, capture_output=True)

    assert deliver_lda("dave@example.test").returncode == 0
    assert len(messages(tmp_path / "v" / "example.test" / "dave")) == 1
    assert deliver_lda("nobody@example.test").returncode == 67  # EX_NOUSER
    db.unlink()
    failed = deliver_lda("dave@example.test")
    assert failed.returncode == 75, failed  # EX_TEMPFAIL: the MTA keeps the message and retries
    assert failed.stdout.startswith(b"4.3.0 dave@example.test")
