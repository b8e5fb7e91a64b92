"""Every way out of a session frees its connection slot: failed STARTTLS handshakes, clients that stop
reading. Observed through the wire and ``mda_sessions_open`` on /metrics, never through the session."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.ops.helpers import scrape, value
from tests.waiting import wait_for

MESSAGE = b"Subject: slots\r\n\r\nbody\r\n"
SLOTS = 5


def _open_sessions(server) -> float:
    return value(scrape(server), "mda_sessions_open")


def _served(address: tuple[str, int] | str, *, lmtp: bool = False) -> None:
    """A normal client still gets its greeting and its message delivered."""
    with Client(address, timeout=10) as client:
        assert client.greeting.code == 220, client.greeting
        client.cmd("LHLO client.test" if lmtp else "EHLO client.test")
        _, data = transaction(client, "s@remote.test", ["alice@example.test"], MESSAGE, lmtp=lmtp)
        assert data[0].code == 250, data
        client.cmd("QUIT")


def _smtp_tls_server(start_mda, root, certificate, **limits: object):
    cert, key = certificate
    listener = {
        "protocol": "smtp",
        "bind": "127.0.0.1:0",
        "tls": {"cert": str(cert), "key": str(key)},
        "limits": {"max_connections": SLOTS, "max_connections_per_client": SLOTS, **limits},
    }
    # max_connections counts every listener's sessions: phantoms would lock the MTA's socket out too.
    postfix_socket = {"protocol": "lmtp", "bind": f"unix:{root.parent}/lmtp.sock", "limits": {"max_connections": SLOTS}}
    config = basic_config(root, listeners=[listener, postfix_socket], metrics={"bind": "127.0.0.1:0"})
    return start_mda(config)


def _abandon_handshake(address: tuple[str, int], how: str) -> None:
    sock = socket.create_connection(address, timeout=10)
    try:
        client = Client.attach(sock)
        assert client.greeting.code == 220, f"slot not freed by an earlier abandoned handshake: {client.greeting}"
        assert client.cmd("EHLO client.test").code == 250
        assert client.cmd("STARTTLS").code == 220
        if how == "garbage":
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
        if how in ("garbage", "silent"):
            # The server gives up on its own (no ClientHello, or none in time) and closes.
            sock.settimeout(15)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("how", "limits"),
    [("hang-up", {}), ("garbage", {}), ("silent", {"command_timeout": "1s"})],
)
def test_abandoned_starttls_handshakes_free_their_slots(start_mda, tmp_path, certificate, how, limits):
    server = _smtp_tls_server(start_mda, tmp_path / "mail", certificate, **limits)
    rounds = 2 * SLOTS if how != "silent" else SLOTS + 1
    for _ in range(rounds):
        _abandon_handshake(server.smtp, how)
    _served(server.smtp)
    _served(server.unix["lmtp"][0], lmtp=True)
    wait_for(lambda: _open_sessions(server) == 0, what="mda_sessions_open back to 0")
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 10, "shutdown waited for sessions that no longer exist"


def _peak_memory(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_client_that_stops_reading_loses_its_slots(start_mda, tmp_path):
    """Pipelined commands, replies never read: the write timeout aborts the connection (a graceful close
    would wait for the client to read forever), and meanwhile the server stops reading from it.

    EHLO rather than NOOP: its larger reply fills the server's socket send buffer (which the kernel
    grows up to ``tcp_wmem``) within a second or two instead of minutes."""
    listener = {
        "protocol": "smtp",
        "bind": "127.0.0.1:0",
        "limits": {
            "max_connections_per_client": SLOTS,
            "command_timeout": "1s",
            "data_timeout": "2s",
        },
    }
    # One process: the one whose memory is measured.
    config = basic_config(tmp_path / "mail", listeners=[listener], metrics={"bind": "127.0.0.1:0"}, workers=1)
    server = start_mda(config)
    flood = b"EHLO client.test\r\n" * 900_000  # 16 MiB a connection
    socks: list[socket.socket] = []
    try:
        for _ in range(SLOTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(server.smtp)
            sock.setblocking(False)
            socks.append(sock)
        wait_for(lambda: _open_sessions(server) == SLOTS, what=f"{SLOTS} sessions open")
        peak_before = _peak_memory(server.process.pid)
        accepted = [0] * SLOTS
        open_socks = set(range(SLOTS))
        stalled_since = time.monotonic()
        while open_socks and time.monotonic() - stalled_since < 0.5:  # push until every socket stays full
            for index in list(open_socks):
                if accepted[index] == len(flood):
                    open_socks.discard(index)
                    continue
                try:
                    sent = socks[index].send(flood[accepted[index] : accepted[index] + 65536])
                except BlockingIOError:
                    continue
                except OSError:  # aborted by the server
                    open_socks.discard(index)
                    continue
                accepted[index] += sent
                stalled_since = time.monotonic()
        wait_for(lambda: _open_sessions(server) == 0, timeout=20, what="mda_sessions_open back to 0")
        # While its replies backed up, the server stopped reading: no client could push its whole flood
        # (what it did push stayed in the kernel's socket buffers), and the server's memory grew by a
        # fixed amount per session, far from the 80 MiB offered.
        assert max(accepted) < len(flood) // 2, accepted
        growth = _peak_memory(server.process.pid) - peak_before
        assert growth < 40 * 2**20, (growth, accepted)
        _served(server.smtp)
    finally:
        for sock in socks:
            sock.close()


def test_shutdown_does_not_wait_for_a_client_that_stops_reading(start_mda, tmp_path):
    """SIGTERM tells idle sessions ``421 4.3.2``; one whose replies back up is dropped, not waited for."""
    listener = {"protocol": "smtp", "bind": "127.0.0.1:0", "limits": {"junk_command_limit": 0}}
    server = start_mda(basic_config(tmp_path / "mail", listeners=[listener], shutdown_timeout="2s"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(server.smtp)
    sock.setblocking(False)
    flood = b"EHLO client.test\r\n" * 900_000
    try:
        accepted, stalled_since = 0, time.monotonic()
        # Until the server has taken nothing for 2 s: it then sits blocked on its replies.
        while accepted < len(flood) and time.monotonic() - stalled_since < 2:
            try:
                accepted += sock.send(flood[accepted : accepted + 65536])
                stalled_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        assert accepted < len(flood)
        started = time.monotonic()
        assert server.stop(timeout=30) == 0
        assert time.monotonic() - started < 10
    finally:
        sock.close()
