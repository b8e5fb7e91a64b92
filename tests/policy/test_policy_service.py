"""The ``protocol: policy`` listener: Postfix's policy delegation protocol over raw sockets.

Postfix SMTPD_POLICY_README: ``name=value`` lines, an empty line ends a request, one ``action=...`` line
and an empty line answer it, and the connection stays open for the next request. The answers come from
the same policy as mda's RCPT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import basic_config
from tests.mdaproc import RunningServer

UNKNOWN = "action=REJECT 5.1.1 No such user here"
DUNNO = "action=DUNNO"
FULL = "action=552 5.2.2 Mailbox full"
FULL_TEMPORARY = "action=DEFER_IF_PERMIT 4.2.2 Mailbox full"
DISK_FULL = "action=DEFER_IF_PERMIT 4.3.1 Insufficient system storage"
LOOKUP_FAILED = "action=DEFER_IF_PERMIT 4.3.0 Temporary lookup failure"


def request(recipient: str, state: str = "RCPT", **extra: str) -> dict[str, str]:
    """What Postfix 3.7's smtpd sends at RCPT (a subset: mda reads only a few of them)."""
    return {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.1",
        "client_name": "unknown",
        "helo_name": "client.test",
        "sender": "sender@remote.test",
        "recipient": recipient,
        "recipient_count": "0",
        "queue_id": "",
        "instance": "123.456.7",
        "size": "0",
        "ccert_subject": "",
        **extra,
    }


def encode(attributes: dict[str, str]) -> bytes:
    return "".join(f"{name}={value}\n" for name, value in attributes.items()).encode() + b"\n"


class PolicyClient:
    """One connection to a policy listener (TCP ``(host, port)`` or a UNIX path)."""

    def __init__(self, address: tuple[str, int] | str) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(address)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> str:
        """One ``action=...`` line; the empty line after it is required."""
        while b"\n\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed; received {self.buffer!r}")
            self.buffer += chunk
        answer, _, self.buffer = self.buffer.partition(b"\n\n")
        assert b"\n" not in answer
        return answer.decode()

    def ask(self, recipient: str, **extra: str) -> str:
        self.send(encode(request(recipient, **extra)))
        return self.answer()

    def closed(self) -> bool:
        """True when the server closed the connection without sending anything more."""
        data = self.sock.recv(4096)
        assert data == b"", data
        return True

    def close(self) -> None:
        self.sock.close()


def config_with_policy(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config = basic_config(
        tmp_path / "mail",
        users={
            "alice@example.test": {},
            "bob@example.test": {"quota": "1K"},
        },
        aliases={"team@example.test": ["alice@example.test", "bob@example.test"]},
    )
    config["listeners"] += [
        {"protocol": "policy", "bind": "127.0.0.1:0"},
        {"protocol": "policy", "bind": f"unix:{tmp_path}/policy.sock"},
    ]
    config.update(overrides)
    return config


@pytest.fixture
def server(start_mda, tmp_path: Path) -> RunningServer:
    return start_mda(config_with_policy(tmp_path))


def test_start_up_lines_name_the_policy_listeners(server, tmp_path):
    assert "listening policy 127.0.0.1:" + str(server.tcp["policy"][0][1]) in server.lines
    assert f"listening policy unix:{tmp_path}/policy.sock" in server.lines


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_several_requests_on_one_connection_answer_as_rcpt_would(server, transport):
    address = server.tcp["policy"][0] if transport == "tcp" else server.unix["policy"][0]
    client = PolicyClient(address)
    try:
        assert client.ask("nobody@example.test") == UNKNOWN
        assert client.ask("alice@example.test") == DUNNO
        assert client.ask("Alice+news@Example.Test") == DUNNO
        assert client.ask("team@example.test") == DUNNO
        assert client.ask("someone@elsewhere.test") == DUNNO  # not ours: Postfix's other rules decide
        assert client.ask("bob@example.test", size="2000") == FULL
        assert client.ask("bob@example.test", size="100") == DUNNO
        assert client.ask("bob@example.test") == DUNNO  # size=0: no SIZE given, an empty mailbox has room
        assert client.ask("a..b@example.test") == "action=REJECT 5.1.3 Bad address syntax"
        assert client.ask("nobody@example.test", state="DATA") == DUNNO  # only RCPT is judged
        assert client.ask("nobody@example.test", request="junk_request") == DUNNO
        assert client.ask("nobody@example.test") == UNKNOWN  # still open, still answering
    finally:
        client.close()
    log = server.wait_for_log("recipient=nobody@example.test")
    assert "rcpt_refused" in log and 'listener="policy ' in log


def test_pipelined_requests_are_answered_in_order(server):
    client = PolicyClient(server.tcp["policy"][0])
    try:
        client.send(
            encode(request("nobody@example.test")) + encode(request("alice@example.test")) + encode(request("x@y.test"))
        )
        assert [client.answer() for _ in range(3)] == [UNKNOWN, DUNNO, DUNNO]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"request=smtpd_access_policy\nthis line has no equals sign\n\n", "a line without name=value"),
        (b"request=smtpd_access_policy\n=value\n\n", "a line without name=value"),
        (b"request=smtpd_access_policy\nrecipient=" + b"a" * 5000 + b"@example.test\n\n", "longer than 4096"),
        (b"".join(b"x%d=1\n" % i for i in range(101)) + b"\n", "more than 100 attributes"),
        (b"request=smtpd_access_policy\nrecipient=\xff\xfe@example.test\n\n", "not UTF-8"),
        (b"\n", "an empty request"),
        (b"request=smtpd_access_policy\nrecipient=a@example.test", "closed inside a request"),
    ],
)
def test_malformed_input_is_logged_and_the_connection_closed(server, payload, reason):
    client = PolicyClient(server.tcp["policy"][0])
    try:
        client.send(payload)
        if reason == "closed inside a request":
            client.sock.shutdown(socket.SHUT_WR)
        assert client.closed()
    finally:
        client.close()
    log = server.wait_for_log(reason)
    assert "policy_malformed" in log and reason in log, log
    # The listener goes on serving new connections.
    client = PolicyClient(server.tcp["policy"][0])
    try:
        assert client.ask("nobody@example.test") == UNKNOWN
    finally:
        client.close()


def test_a_huge_line_without_end_is_refused_not_buffered(server):
    """Megabytes without LF: the server closes the connection after the first 4096 bytes."""
    client = PolicyClient(server.tcp["policy"][0])
    try:
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1024):  # 64 MiB at most; a server that buffered it all would never reset
                client.send(b"x" * 65536)
        assert "longer than 4096" in server.wait_for_log("longer than 4096")
    finally:
        client.close()


def test_over_quota_defers_with_quota_full_tempfail(start_mda, tmp_path):
    config = config_with_policy(tmp_path)
    config["storage"]["quota_full_tempfail"] = True
    server = start_mda(config)
    client = PolicyClient(server.tcp["policy"][0])
    try:
        assert client.ask("bob@example.test", size="2000") == FULL_TEMPORARY
    finally:
        client.close()


def test_no_space_defers(start_mda, tmp_path):
    server = start_mda(config_with_policy(tmp_path, free_space_reserve="100000000G"))
    client = PolicyClient(server.tcp["policy"][0])
    try:
        assert client.ask("alice@example.test") == DISK_FULL
        assert client.ask("nobody@example.test") == UNKNOWN
    finally:
        client.close()


@pytest.mark.root
def test_a_failing_user_lookup_defers_and_never_rejects(start_mda, tmp_path):
    """The mailbox owner cannot be looked up (a user database that fails): defer, as RCPT says 451."""
    config = config_with_policy(tmp_path)
    config["storage"]["owner"] = "no-such-system-user-here"
    server = start_mda(config)
    client = PolicyClient(server.tcp["policy"][0])
    try:
        assert client.ask("alice@example.test") == LOOKUP_FAILED
        assert client.ask("nobody@example.test") == UNKNOWN
    finally:
        client.close()
    assert "policy_error" in server.wait_for_log("policy_error")


def test_allow_list_applies_to_policy_listeners(start_mda, tmp_path):
    config = config_with_policy(tmp_path)
    config["listeners"][2]["allow"] = ["10.0.0.0/8"]
    server = start_mda(config)
    client = PolicyClient(server.tcp["policy"][0])
    try:
        client.send(encode(request("alice@example.test")))
        assert client.closed()
    finally:
        client.close()
    assert "not_allowed" in server.wait_for_log("not_allowed")


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"tls": {"cert": "c.pem", "key": "k.pem"}}, "tls"),
        ({"proxy_protocol": True}, "proxy_protocol"),
    ],
)
def test_check_config_refuses_what_a_policy_listener_cannot_do(tmp_path, extra, key):
    config = config_with_policy(tmp_path)
    config["listeners"][2].update(extra)
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{key}: does not apply to a policy listener" in result.stderr, result.stderr


def test_sigterm_closes_idle_policy_connections_and_exits(server):
    client = PolicyClient(server.tcp["policy"][0])
    try:
        assert client.ask("alice@example.test") == DUNNO
        server.signal(signal.SIGTERM)
        assert client.closed()
    finally:
        client.close()
    assert server.process.wait(15) == 0


def test_workers_share_the_policy_listener(start_mda, tmp_path):
    server = start_mda(config_with_policy(tmp_path, workers=2))
    for address in (server.tcp["policy"][0], server.unix["policy"][0]):
        clients = [PolicyClient(address) for _ in range(4)]
        try:
            assert [c.ask("nobody@example.test") for c in clients] == [UNKNOWN] * 4
            assert [c.ask("alice@example.test") for c in clients] == [DUNNO] * 4
        finally:
            for c in clients:
                c.close()


def test_malformed_input_on_a_unix_socket_names_the_peer_process(server):
    client = PolicyClient(server.unix["policy"][0])
    try:
        client.send(b"no equals sign here\n\n")
        assert client.closed()
    finally:
        client.close()
    log = server.wait_for_log("policy_malformed")
    line = next(line for line in log.splitlines() if "policy_malformed" in line)
    assert f'client="unix:pid={os.getpid()},uid=0"' in line, line
