"""``state:`` on a private PostgreSQL: two real ``mda serve`` instances share the duplicate and vacation
records; a pending record left by a dead delivery does not suppress its retry; a store that is down
never bounces (the message is delivered and the failure logged)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mda.userdb.sql import postgres_pool
from tests.clients import Client
from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.peers.postgres import PASSWORD, PostgresServer, postgres_server
from tests.sieve_delivery.conftest import Sink, smtp_sink
from tests.sieve_delivery.test_sieve_delivery import VACATION_SCRIPT, maildir, stored, write_script
from tests.waiting import wait_for

__all__ = ["smtp_sink"]

ALICE = "alice@example.test"
SENDER = "sender@example.org"
HELD = (451, "4.3.0")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def _config(pg: PostgresServer, tmp_path: Path, root: Path, **overrides: Any) -> dict[str, Any]:
    password_file = tmp_path / "state-password"
    password_file.write_text(PASSWORD + "\n")
    config = basic_config(
        root,
        duplicate_window="1d",
        state={"url": pg.url, "password_file": str(password_file), "timeout": "3s"},
        sieve={"path": "{home}/active.sieve"},
    )
    config.update(overrides)
    return config


def _message(msgid: str, sender: str = SENDER) -> bytes:
    return f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: hi\r\nMessage-ID: <{msgid}>\r\n\r\nbody\r\n".encode()


def _send(
    server: RunningServer, data: bytes, sender: str = SENDER, ready: threading.Barrier | None = None
) -> tuple[int, str]:
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        assert client.cmd(f"MAIL FROM:<{sender}>").code == 250
        assert client.cmd(f"RCPT TO:<{ALICE}>").code == 250
        if ready is not None:
            ready.wait(10)
        (reply,) = client.data(data, replies=1)
        return reply.code, reply.enhanced


def _concurrently(calls: list[Callable[[], tuple[int, str]]]) -> list[tuple[int, str]]:
    results: list[tuple[int, str] | None] = [None] * len(calls)

    def one(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(r is not None for r in results), results
    return [r for r in results if r is not None]


def _copies(root: Path, msgid: str) -> int:
    return sum(1 for path in stored(maildir(root)) if f"<{msgid}>".encode() in path.read_bytes())


def test_two_instances_store_one_copy_of_a_message_sent_to_both_at_once(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """Each pair of simultaneous deliveries of one Message-ID yields one stored copy: one instance
    answers 250, the other 250 (already committed) or 451 4.3.0 (still pending there); a retry of a 451
    is then suppressed."""
    root = tmp_path / "mail"
    first = start_mda(_config(pg, tmp_path, root))
    second = start_mda(_config(pg, tmp_path, root))
    held = []
    for number in range(8):
        msgid = f"race{number}@remote.test"
        ready = threading.Barrier(2)
        replies = _concurrently(
            [lambda s=server, m=msgid, r=ready: _send(s, _message(m), ready=r) for server in (first, second)]  # type: ignore[misc]
        )
        assert (250, "2.0.0") in replies and set(replies) <= {(250, "2.0.0"), HELD}, replies
        assert _copies(root, msgid) == 1
        if HELD in replies:
            held.append(msgid)
            assert _send(second, _message(msgid)) == (250, "2.0.0")
            assert _copies(root, msgid) == 1
    rows = pg.sql("SELECT count(*), count(*) FILTER (WHERE state = 'committed') FROM mda_duplicates")
    assert rows.strip() == "8|8"


def test_two_instances_send_one_vacation_reply(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    """The same sender writes twice, at once, through two instances: both copies are stored, and the
    reply record claimed by one instance stops the other from answering."""
    root = tmp_path / "mail"
    write_script(root, VACATION_SCRIPT)
    submission = {"host": "127.0.0.1", "port": smtp_sink.port}
    first = start_mda(_config(pg, tmp_path, root, submission=submission, duplicate_window=0))
    second = start_mda(_config(pg, tmp_path, root, submission=submission, duplicate_window=0))
    writer = "traveller@example.org"
    ready = threading.Barrier(2)
    replies = _concurrently(
        [
            lambda: _send(first, _message("v1@example.org", writer), writer, ready),
            lambda: _send(second, _message("v2@example.org", writer), writer, ready),
        ]
    )
    assert replies == [(250, "2.0.0")] * 2
    assert len(stored(maildir(root))) == 2
    sent = smtp_sink.wait(1)
    assert [(m.sender, m.recipients) for m in sent] == [("<>", (writer,))]
    assert _send(first, _message("v3@example.org", writer), writer) == (250, "2.0.0")
    assert len(smtp_sink.messages) == 1
    assert pg.sql("SELECT sender FROM mda_vacation").split() == [writer]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_pending_record_of_a_dead_delivery_does_not_suppress_the_retry(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """A claim whose owner on this host no longer runs, or any claim older than the lease, lets the retry
    deliver; a live claim of another host holds it back (451 4.3.0); only a committed record suppresses."""
    root = tmp_path / "mail"
    server = start_mda(_config(pg, tmp_path, root))
    assert _send(server, _message("warmup@remote.test")) == (250, "2.0.0")  # creates the tables
    key = ALICE
    now = time.time()
    host = os.uname().nodename
    pg.sql(
        "INSERT INTO mda_duplicates VALUES"
        f" ('<dead@remote.test>', '{key}', 'pending', '{host}:{_dead_pid()}:x', {now}),"
        f" ('<old@remote.test>', '{key}', 'pending', 'elsewhere:1:x', {now - 3600}),"
        f" ('<live@remote.test>', '{key}', 'pending', 'elsewhere:1:x', {now}),"
        f" ('<done@remote.test>', '{key}', 'committed', 'elsewhere:1:x', {now})"
    )
    assert _send(server, _message("dead@remote.test")) == (250, "2.0.0")
    assert _send(server, _message("old@remote.test")) == (250, "2.0.0")
    assert _send(server, _message("live@remote.test")) == HELD
    assert _send(server, _message("done@remote.test")) == (250, "2.0.0")
    assert [_copies(root, f"{m}@remote.test") for m in ("dead", "old", "live", "done")] == [1, 1, 0, 0]
    states = pg.sql("SELECT message_id || '=' || state FROM mda_duplicates ORDER BY message_id").split()
    assert "<dead@remote.test>=committed" in states and "<old@remote.test>=committed" in states
    assert "<live@remote.test>=pending" in states


def test_a_store_that_is_down_never_bounces(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    """PostgreSQL killed: every message is still delivered (a duplicate is possible, never a loss), no
    vacation reply goes out (never two), and both failures are logged as ``state_error``."""
    root = tmp_path / "mail"
    write_script(root, VACATION_SCRIPT)
    submission = {"host": "127.0.0.1", "port": smtp_sink.port}
    server = start_mda(_config(pg, tmp_path, root, submission=submission))
    pg.kill()
    try:
        assert _send(server, _message("down@remote.test", "someone@example.org"), "someone@example.org") == (
            250,
            "2.0.0",
        )
        assert _send(server, _message("down@remote.test", "someone@example.org"), "someone@example.org") == (
            250,
            "2.0.0",
        )
        assert _copies(root, "down@remote.test") == 2
        log = server.wait_for_log("record=vacation")
        assert "state_error" in log and "record=duplicate" in log
        assert PASSWORD not in log
        assert smtp_sink.messages == []
    finally:
        pg.start()
    assert _send(server, _message("up@remote.test")) == (250, "2.0.0")
    assert _send(server, _message("up@remote.test")) == (250, "2.0.0")
    assert _copies(root, "up@remote.test") == 1


def test_a_delivery_killed_between_claim_and_commit_does_not_suppress_the_retry(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """``kill -9`` while the delivery waits on its vacation reply (after the claim, before the record's
    commit): the pending record stays, owned by a dead process, and the MX's retry through a new
    instance is delivered (a second copy, never a loss)."""
    root = tmp_path / "mail"
    write_script(root, VACATION_SCRIPT)
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)  # accepts the TCP connection, never says a word: the reply waits
    port = stalled.getsockname()[1]
    config = _config(pg, tmp_path, root, submission={"host": "127.0.0.1", "port": port})
    server = start_mda(config)
    writer = "killed@example.org"
    client = Client(server.lmtp)
    try:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{writer}>")
        assert client.cmd(f"RCPT TO:<{ALICE}>").code == 250
        assert client.cmd("DATA").code == 354
        client.send(_message("killed@remote.test", writer) + b".\r\n")
        stalled.settimeout(15)
        waiting, _ = stalled.accept()  # the delivery is now between its claim and its commit
        state = pg.sql("SELECT state FROM mda_duplicates WHERE message_id = '<killed@remote.test>'").strip()
        assert state == "pending"
        os.killpg(server.process.pid, signal.SIGKILL)  # the whole service: supervisor and workers
        server.process.wait(10)
        waiting.close()
    finally:
        client.close()
        stalled.close()
    retry = start_mda({**config, "submission": {"host": "127.0.0.1", "port": 9}})
    assert _send(retry, _message("killed@remote.test", writer), writer) == (250, "2.0.0")
    assert _copies(root, "killed@remote.test") == 2
    state = pg.sql("SELECT state FROM mda_duplicates WHERE message_id = '<killed@remote.test>'").strip()
    assert state == "committed"


def test_check_config_connect_reaches_the_store(pg: PostgresServer, tmp_path: Path) -> None:
    """``check-config --connect`` opens ``state:`` with its password file, as the server will."""
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(_config(pg, tmp_path, tmp_path / "mail")))
    result = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(path), "--connect"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result
    assert f"state postgresql {pg.url}: ok\n" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_a_reload_opens_the_store_again_with_the_new_password(
    pg: PostgresServer, tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """A reload takes ``state:`` afresh, as it takes the userdb: the password file is read again and new
    connections use it. (A pool kept across the reload logged in with the old password once its
    connections were gone, and delivered without suppression.)"""
    root = tmp_path / "mail"
    config = _config(pg, tmp_path, root)
    server = start_mda(config)
    assert _send(server, _message("rotate@remote.test")) == (250, "2.0.0")
    try:
        pg.sql("ALTER ROLE mda PASSWORD 'rotated-password'", database="postgres")
        (tmp_path / "state-password").write_text("rotated-password\n")
        server.signal(signal.SIGHUP)
        server.wait_for_log("event=reloaded")
        assert _send(server, _message("rotate@remote.test")) == (250, "2.0.0")
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mda'", database="postgres")
        assert _send(server, _message("rotate@remote.test")) == (250, "2.0.0")
        assert _copies(root, "rotate@remote.test") == 1
        assert "event=state_error" not in server.log()
    finally:
        pg.sql(f"ALTER ROLE mda PASSWORD '{PASSWORD}'", database="postgres")


def test_a_closed_pool_still_answers_a_late_caller_and_keeps_no_connection(pg: PostgresServer) -> None:
    """What a transaction that took a replaced configuration gets after the reload closed its pool."""
    connections = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mda'"
    pool = postgres_pool(pg.url, PASSWORD, 3.0, 2, "state")
    assert pool.run("SELECT 1 AS one", {}) == (["one"], [(1,)])
    assert pg.sql(connections).strip() == "1"
    pool.close()
    wait_for(lambda: pg.sql(connections).strip() == "0")
    assert pool.run("SELECT 2 AS two", {}) == (["two"], [(2,)])
    wait_for(lambda: pg.sql(connections).strip() == "0")
