"""The metrics endpoint under hostile clients, and ``/healthz`` following the event loop's heartbeat."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from mda.probes import REQUEST_TIMEOUT, STALE_AFTER, is_alive
from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.ops.helpers import fetch, metrics_url, scrape, value
from tests.ops.test_workers import _worker_pids
from tests.waiting import wait_for

HALF_SENT = 600


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _endpoint(server: RunningServer) -> tuple[str, int]:
    host, port = metrics_url(server).removeprefix("http://").removesuffix("/metrics").rsplit(":", 1)
    return host, int(port)


def _raw(server: RunningServer, request: bytes) -> bytes:
    with socket.create_connection(_endpoint(server), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("workers", [1, 2])
def test_half_sent_requests_cost_no_threads_and_a_scrape_still_works(start_mda, tmp_path: Path, workers: int) -> None:
    server = start_mda(basic_config(tmp_path / "mail", workers=workers, metrics={"bind": "127.0.0.1:0"}))
    pid = server.process.pid
    before = _threads(pid)
    held = []
    try:
        for _ in range(HALF_SENT):
            sock = socket.create_connection(_endpoint(server), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            held.append(sock)
        status, text = fetch(metrics_url(server))
        assert status == 200 and "mda_build_info" in text
        # The process's own threads (storage pool, file watcher) may start meanwhile; a thread per
        # connection would be hundreds more.
        assert _threads(pid) < before + 8, f"{before} threads before, {_threads(pid)} with {HALF_SENT} half-sent"
        print(f"threads: {before} before, {_threads(pid)} with {HALF_SENT} half-sent requests")
        # The oldest were closed to make room, the rest once their time to send a request is over.
        started = time.monotonic()
        for sock in held[-10:]:
            assert sock.recv(100) == b""
        assert time.monotonic() - started < REQUEST_TIMEOUT + 3
    finally:
        for sock in held:
            sock.close()
    assert fetch(metrics_url(server).replace("/metrics", "/readyz")) == (200, "ready\n")


def test_malformed_and_oversized_requests(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    assert _raw(server, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert _raw(server, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(server, b"GET /x HTTP/1.1\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.1 431 ")
    head = _raw(server, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert _raw(server, b"GET /healthz?x=1 HTTP/1.1\n\n").endswith(b"\r\n\r\nok\n")
    assert fetch(metrics_url(server))[0] == 200


def test_liveness_is_the_age_of_the_heartbeat() -> None:
    now = 1_000_000.0
    assert is_alive(now - 1, now)
    assert is_alive(now - STALE_AFTER, now)
    assert not is_alive(now - STALE_AFTER - 0.1, now)
    assert not is_alive(None, now)
    assert is_alive(now + 5, now)  # a clock stepped back is not a frozen loop


def test_heartbeat_is_exposed_and_recent(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    first = value(scrape(server), "mda_event_loop_heartbeat_timestamp_seconds")
    assert abs(time.time() - first) < STALE_AFTER
    wait_for(lambda: value(scrape(server), "mda_event_loop_heartbeat_timestamp_seconds") > first, timeout=5)
    assert fetch(metrics_url(server).replace("/metrics", "/healthz")) == (200, "ok\n")


def test_healthz_fails_while_a_worker_loop_is_frozen(start_mda, tmp_path: Path) -> None:
    """A stopped worker is a loop that runs no more; the supervisor, which answers, sees its beat age."""
    server = start_mda(basic_config(tmp_path / "mail", workers=2, metrics={"bind": "127.0.0.1:0"}))
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    healthz = metrics_url(server).replace("/metrics", "/healthz")
    assert fetch(healthz) == (200, "ok\n")
    worker = _worker_pids(server.log())[1]
    os.kill(worker, signal.SIGSTOP)
    try:
        wait_for(lambda: fetch(healthz)[0] == 503, timeout=STALE_AFTER + 5, interval=0.5)
        assert fetch(healthz) == (503, "event loop stalled\n")
        assert fetch(metrics_url(server))[0] == 200
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: fetch(healthz) == (200, "ok\n"), timeout=5)
