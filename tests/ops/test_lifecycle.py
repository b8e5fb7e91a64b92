"""Lifecycle: graceful shutdown on SIGTERM, systemd notifications, privilege drop after binding."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from mda import sdnotify
from tests.clients import Client, dot_stuff
from tests.conftest import basic_config
from tests.ops.helpers import MESSAGE, stored_files
from tests.ops.load import SteadyLoad
from tests.waiting import wait_for


def test_sigterm_under_load_loses_nothing_acknowledged(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, shutdown_timeout="5s"))
    load = SteadyLoad(server.lmtp, "alice@example.test", threads=4)
    with load:
        wait_for(lambda: load.acknowledged > 20)
        server.signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
    assert load.acknowledged > 20
    assert len(stored_files(root, "alice")) >= load.acknowledged, "a 250 without its file"
    log = server.log()
    assert "event=stopping" in log and "event=stopped" in log


def test_idle_session_is_told_421_and_exit_is_clean(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO x")
        server.signal(signal.SIGTERM)
        reply = client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
    assert server.process.wait(10) == 0


def test_data_in_flight_finishes_then_421(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, shutdown_timeout="10s"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO x")
        assert client.cmd("MAIL FROM:<s@example.net>").code == 250
        assert client.cmd("RCPT TO:<alice@example.test>").code == 250
        assert client.cmd("RCPT TO:<bob@example.test>").code == 250
        assert client.cmd("DATA").code == 354
        wire = dot_stuff(MESSAGE)
        client.send(wire[:20])
        wait_for(lambda: "session_open" in server.log())
        server.signal(signal.SIGTERM)
        wait_for(lambda: "event=stopping" in server.log())
        with pytest.raises(OSError):
            Client(server.lmtp, timeout=2)
        client.send(wire[20:] + b".\r\n")
        assert [client.read_reply().code for _ in range(2)] == [250, 250]
        reply = client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
    assert server.process.wait(10) == 0
    assert len(stored_files(root, "alice")) == len(stored_files(root, "bob")) == 1


def test_open_envelope_gets_421_after_shutdown_timeout(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", shutdown_timeout="1s"))
    with Client(server.lmtp) as client:
        client.cmd("LHLO x")
        assert client.cmd("MAIL FROM:<s@example.net>").code == 250
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        reply = client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        assert time.monotonic() - started >= 0.9
    assert server.process.wait(10) == 0


def _datagrams(sock: socket.socket, until: str, timeout: float = 10.0) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in received[-1]:
            return received
    raise AssertionError(f"no {until!r} in {received}")


def test_sd_notify_datagrams() -> None:
    name = f"@mda-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        os.environ[sdnotify.ENV] = name
        try:
            assert sdnotify.ready("serving")
            assert sock.recv(100) == b"READY=1\nSTATUS=serving"
        finally:
            del os.environ[sdnotify.ENV]
    assert not sdnotify.stopping()


def test_systemd_ready_reloading_stopping(start_mda, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv(sdnotify.ENV, str(path))
        server = start_mda(basic_config(tmp_path / "mail"))
        assert "READY=1" in _datagrams(sock, "READY=1")[-1]
        server.signal(signal.SIGHUP)
        messages = _datagrams(sock, "READY=1")
        assert messages[0] == "RELOADING=1"
        server.signal(signal.SIGTERM)
        _datagrams(sock, "STOPPING=1")
        assert server.process.wait(10) == 0


@pytest.mark.root
def test_root_binds_sets_socket_mode_then_drops_privileges(start_mda, tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    root = tmp_path / "mail"
    root.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chown(root, nobody.pw_uid, nobody.pw_gid)
    socket_path = tmp_path / "run" / "lmtp.sock"
    config = basic_config(root, user="nobody")
    config["listeners"].append(
        {"protocol": "lmtp", "bind": f"unix:{socket_path}", "socket_mode": "0660", "socket_owner": "nobody"}
    )
    server = start_mda(config)
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    info = os.stat(socket_path)
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_uid == nobody.pw_uid
