"""PROXY headers only from trusted proxies (``proxy_trusted``), and what a trusted header changes."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import yaml

from tests.clients import Client
from tests.conftest import basic_config

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _proxy_config(root: Path, **listener: object) -> dict[str, object]:
    return basic_config(
        root, listeners=[{"protocol": "lmtp", "bind": "127.0.0.1:0", "proxy_protocol": True, **listener}]
    )


def _v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 2424\r\n".encode()


def _v2_unix(source: bytes) -> bytes:
    addresses = source.ljust(108, b"\0") + b"/run/mda/lmtp.sock".ljust(108, b"\0")
    return V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(addresses)) + addresses


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _deliver(client: Client) -> None:
    client.cmd("LHLO client.test")
    assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
    assert client.cmd("RCPT TO:<alice@example.test>").code == 250
    assert client.data(b"Subject: p\r\n\r\nx\r\n")[0].code == 250


def _stored(root: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((root / "example.test/alice/Maildir/new").glob("*"))]


def test_proxy_header_from_untrusted_peer_is_refused(start_mda, tmp_path):
    root = tmp_path / "mail"
    # The spoofing case: the header claims an allowed client, the real peer (127.0.0.1) is no proxy.
    untrusted = start_mda(_proxy_config(root, proxy_trusted=["192.0.2.0/24"], allow=["10.0.0.0/8"]))
    default = start_mda(_proxy_config(root, allow=["10.0.0.0/8"]))  # empty proxy_trusted trusts no one
    for server in (untrusted, default):
        with socket.create_connection(server.lmtp, timeout=10) as sock:
            sock.sendall(_v1("10.6.6.6") + b"LHLO client.test\r\nMAIL FROM:<s@remote.test>\r\n")
            assert _read_all(sock) == b"554 5.7.1 PROXY header not accepted from this address\r\n"
        log = server.wait_for_log("reason=proxy_untrusted")
        assert "client=127.0.0.1 reason=proxy_untrusted" in log
        assert "10.6.6.6" not in log
    assert _stored(root) == []


def test_trusted_proxy_header_sets_received_allow_and_per_client_limits(start_mda, tmp_path):
    root = tmp_path / "mail"
    config = _proxy_config(
        root, proxy_trusted=["127.0.0.1/32"], allow=["10.0.0.0/8"], limits={"max_connections_per_client": 1}
    )
    config["workers"] = 1  # one process: connection limits count per worker process (README, "Workers")
    server = start_mda(config)
    first = socket.create_connection(server.lmtp, timeout=10)
    first.sendall(_v1("10.6.6.6"))
    held = Client.attach(first)
    assert held.greeting.code == 220
    try:
        # Limits count the proxied client: another client through the same proxy is served ...
        second = socket.create_connection(server.lmtp, timeout=10)
        second.sendall(_v1("10.7.7.7"))
        with Client.attach(second) as client:
            assert client.greeting.code == 220
            _deliver(client)
        # ... a second connection of 10.6.6.6 is over its limit, and a client outside allow is refused.
        with socket.create_connection(server.lmtp, timeout=10) as sock:
            sock.sendall(_v1("10.6.6.6"))
            assert _read_all(sock).startswith(b"421 4.7.0")
        with socket.create_connection(server.lmtp, timeout=10) as sock:
            sock.sendall(_v1("192.0.2.9"))
            assert _read_all(sock).startswith(b"554 5.7.1 Access denied")
    finally:
        held.close()
    [stored] = _stored(root)
    assert b"Received: from client.test ([10.7.7.7])" in stored


def test_proxy_v2_unix_source_and_local_keep_the_proxy_address(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(_proxy_config(root, proxy_trusted=["127.0.0.0/8"], allow=["10.0.0.0/8"]))
    sock = socket.create_connection(server.lmtp, timeout=10)
    sock.sendall(_v2_unix(b"/var/run/haproxy/client.sock"))
    with Client.attach(sock) as client:
        assert client.greeting.code == 220  # the trusted proxy itself is admitted, outside allow
        _deliver(client)
    [stored] = _stored(root)
    received = stored[stored.index(b"Received:") :].split(b"\n", 1)[0]
    assert b"([127.0.0.1])" in received, received
    assert b"haproxy" not in stored and b"IPv6" not in stored
    # A LOCAL header (a health check, no addresses) is greeted the same way.
    local = socket.create_connection(server.lmtp, timeout=10)
    local.sendall(V2_SIGNATURE + b"\x20\x00\x00\x00")
    with Client.attach(local) as client:
        assert client.greeting.code == 220
        assert client.cmd("QUIT").code == 221


def _check_config(tmp_path: Path, listener: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(basic_config(tmp_path / "mail", listeners=[listener])))
    return subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_validates_proxy_trusted(tmp_path):
    base = {"protocol": "lmtp", "bind": "127.0.0.1:0", "proxy_protocol": True}
    assert _check_config(tmp_path, {**base, "proxy_trusted": ["10.0.0.0/8", "::1"]}).returncode == 0
    for bad, message in (
        ({**base, "proxy_trusted": ["10.0.0.0/33"]}, "not a network: '10.0.0.0/33'"),
        ({**base, "proxy_trusted": ["haproxy.internal"]}, "not a network: 'haproxy.internal'"),
        ({**base, "proxy_trusted": "10.0.0.0/8"}, "expected a list of networks"),
        ({**base, "proxy_protocol": False, "proxy_trusted": ["10.0.0.1"]}, "applies only with proxy_protocol"),
        ({**base, "bind": f"unix:{tmp_path}/l.sock"}, "applies to TCP listeners only"),
    ):
        result = _check_config(tmp_path, bad)
        assert result.returncode == 1, bad
        assert "proxy_" in result.stderr and message in result.stderr, result.stderr
