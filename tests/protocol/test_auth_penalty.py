"""AUTH against guessing: the penalty before verification, the dummy hash's cost, the failure log line,
and password checks kept off the storage threads."""

from __future__ import annotations

import base64
import os
import re
import smtplib
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest

from mda.auth import Credentials
from tests.clients import Client
from tests.conftest import REPOSITORY, basic_config
from tests.peers import programs
from tests.protocol.conftest import PASSWORD, client_context


def _auth_config(root: Path, cert: Path, key: Path, users: Path) -> dict[str, object]:
    tls = {"cert": str(cert), "key": str(key)}
    smtp = {"protocol": "smtp", "bind": "127.0.0.1:0", "tls": tls, "auth": {"users_file": str(users)}}
    # One process: the penalty is counted per process, and with several workers a reconnection may land on
    # another one (README, "Workers").
    return basic_config(root, listeners=[{"protocol": "lmtp", "bind": "127.0.0.1:0"}, smtp], workers=1)


def _plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode("utf-8", "surrogateescape")).decode()


_CONTEXT = client_context()


def _tls_client(address: tuple[str, int], source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP(*address, source_address=(source, 0), timeout=60)
    client.starttls(context=_CONTEXT)
    client.ehlo("client.test")
    return client


def _timed(client: smtplib.SMTP, *args: str) -> tuple[int, float]:
    started = time.monotonic()
    code, _ = client.docmd(*args)
    return code, time.monotonic() - started


def _write_users(path: Path, *rounds: int) -> None:
    lines = [f"user{i}:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=r)).decode()}" for i, r in enumerate(rounds)]
    path.write_text("\n".join(["# comment", *lines, "broken:not-a-hash"]) + "\n")


def test_dummy_hash_has_the_algorithm_and_cost_of_the_files_hashes(tmp_path):
    users = tmp_path / "credentials"
    _write_users(users, 5, 4, 5)
    credentials = Credentials(users)
    assert credentials.dummy.startswith("$2b$05$")  # the cost most users have
    assert credentials.verify("user1", "pw") and not credentials.verify("user1", "no")
    assert not credentials.verify("nobody", "pw") and not credentials.verify("broken", "not-a-hash")
    _write_users(users, 6)
    os.utime(users, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new modification time: re-read
    assert credentials.dummy.startswith("$2b$06$")
    users.write_text("# nobody yet\n")
    os.utime(users, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert credentials.dummy.startswith("$2b$12$")  # bcrypt's default cost
    import argon2  # the [test] extra installs argon2-cffi: mda checks Argon2 hashes when it is there

    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1)
    users.write_text(
        f"a:{hasher.hash('pw')}\nb:{hasher.hash('pw')}\nc:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n"
    )
    os.utime(users, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    assert credentials.dummy.startswith("$argon2id$v=19$m=8192,t=2,p=1$")
    assert credentials.verify("a", "pw") and not credentials.verify("x", "pw")


def _fail2ban_filter() -> str:
    """The fail2ban filter documented in README (its ``[Definition]`` block)."""
    readme = (REPOSITORY / "README.md").read_text()
    block = re.search(r"^ *(\[Definition\]\n(?: *\w+ = .+\n)+)", readme, re.MULTILINE)
    assert block, "README documents a fail2ban filter"
    return "\n".join(line.strip() for line in block.group(1).splitlines()) + "\n"


def _fail2ban_regex() -> re.Pattern[str]:
    """The filter's failregex, with fail2ban's <HOST> as a named group."""
    failregex = re.search(r"^failregex = (.+)$", _fail2ban_filter(), re.MULTILINE)
    assert failregex
    return re.compile(failregex.group(1).replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)"))


def test_auth_failures_are_logged_for_fail2ban(start_mda, tmp_path, certificate, users_file):
    server = start_mda(_auth_config(tmp_path / "mail", *certificate, users_file))
    with _tls_client(server.smtp) as client:
        assert client.docmd("AUTH", _plain('evil" client=10.9.9.9\nx', "guess"))[0] == 535
        client.user, client.password = "alice", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        client.user, client.password = "alice", PASSWORD
        assert client.auth("PLAIN", client.auth_plain)[0] == 235  # a success is not a failure line
    log = server.wait_for_log("mechanism=LOGIN")
    failures = [line for line in log.splitlines() if "event=auth_failed" in line]
    assert len(failures) == 2, failures
    assert 'client=127.0.0.1 user="evil\\" client=10.9.9.9\\\\nx" mechanism=PLAIN' in failures[0]
    assert "client=127.0.0.1 user=alice mechanism=LOGIN" in failures[1]
    pattern = _fail2ban_regex()
    assert [match.group("host") for line in failures if (match := pattern.search(line))] == ["127.0.0.1"] * 2
    assert not any(pattern.search(line) for line in log.splitlines() if "event=auth_failed" not in line)


def test_penalty_is_waited_before_verification_on_the_next_connection(start_mda, tmp_path, certificate, users_file):
    server = start_mda(_auth_config(tmp_path / "mail", *certificate, users_file))
    with _tls_client(server.smtp) as client:
        timings = [_timed(client, "AUTH", _plain("alice", "wrong")) for _ in range(3)]
        assert [code for code, _ in timings] == [535, 535, 535]
        assert timings[2][1] >= 0.9  # third attempt: 1 s before the check
        client.send(f"AUTH {_plain('alice', 'wrong')}\r\n".encode())
        client.close()  # hang up without waiting for the answer
    # A new connection, the right password: its answer still waits out the penalty (2 s or more).
    with _tls_client(server.smtp) as client:
        code, seconds = _timed(client, "AUTH", _plain("alice", PASSWORD))
        assert code == 235 and seconds >= 1.8, seconds
    # A success forgets the address: no wait now (8 s or more if it had not).
    with _tls_client(server.smtp) as client:
        code, seconds = _timed(client, "AUTH", _plain("alice", PASSWORD))
        assert code == 235 and seconds < 4.0, seconds


def test_penalty_counts_on_every_listener_of_the_process(start_mda, tmp_path, certificate, users_file):
    """Failures on one AUTH listener slow the same address down on another: one penalty per process."""
    config = _auth_config(tmp_path / "mail", *certificate, users_file)
    listeners = config["listeners"]
    assert isinstance(listeners, list)
    listeners.append({**listeners[1], "bind": "127.0.0.1:0"})
    server = start_mda(config)
    first, second = server.tcp["smtp"]
    with _tls_client(first) as client:
        codes = [_timed(client, "AUTH", _plain("alice", "wrong"))[0] for _ in range(3)]
    assert codes == [535, 535, 535]
    with _tls_client(second) as client:  # the fourth attempt of this address: 2 s before its check
        code, seconds = _timed(client, "AUTH", _plain("alice", PASSWORD))
    assert code == 235 and seconds >= 1.8, seconds


def test_auth_flood_does_not_hold_up_lmtp_delivery(start_mda, tmp_path, certificate):
    """Password checks have their own threads: a delivery is not queued behind a flood of them."""
    users = tmp_path / "credentials"
    _write_users(users, 8)
    root = tmp_path / "mail"
    server = start_mda(_auth_config(root, *certificate, users))
    # More checks than the 32 storage threads, each from its own address (no penalty shared between them).
    flood = [_tls_client(server.smtp, source=f"127.0.0.{10 + i}") for i in range(36)]
    try:
        started = time.monotonic()
        for client in flood:
            client.send(f"AUTH {_plain('nobody', 'guess')}\r\n".encode())
        with Client(server.lmtp) as lmtp:
            lmtp.cmd("LHLO client.test")
            assert lmtp.cmd("MAIL FROM:<s@remote.test>").code == 250
            assert lmtp.cmd("RCPT TO:<alice@example.test>").code == 250
            assert lmtp.data(b"Subject: during a flood\r\n\r\nx\r\n")[0].code == 250
        delivered = time.monotonic() - started
        assert all(client.getreply()[0] == 535 for client in flood)
        answered = time.monotonic() - started
        assert delivered < answered / 3, f"delivered after {delivered:.2f} s, the flood answered in {answered:.2f} s"
    finally:
        for client in flood:
            client.close()


@pytest.mark.root
def test_fail2ban_matches_with_the_documented_filter(start_mda, tmp_path, certificate, users_file):
    """fail2ban's own tester reads mda's log with the README filter and finds each failing address."""
    fail2ban_regex = programs.require(programs.FAIL2BAN_REGEX)
    server = start_mda(_auth_config(tmp_path / "mail", *certificate, users_file))
    for source in ("127.0.0.7", "127.0.0.8"):
        with _tls_client(server.smtp, source=source) as client:
            assert client.docmd("AUTH", _plain("alice", 'x" client=10.1.1.1'))[0] == 535
    server.wait_for_log("client=127.0.0.8 user=")
    filter_file = tmp_path / "mda-auth.conf"
    filter_file.write_text(_fail2ban_filter())
    result = subprocess.run(
        [fail2ban_regex, "--print-all-matched", str(server.stderr_path), str(filter_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ lines, 0 ignored, 2 matched", result.stdout), result.stdout
    matched = result.stdout.split("Matched line(s):", 1)[1].split("`-", 1)[0]
    assert "client=127.0.0.7 " in matched and "client=127.0.0.8 " in matched
