"""``kill -9`` under load: every acknowledged copy is on disk and whole; nothing partial is visible.

A ``250`` promises that the file and its directory entry were ``fsync``ed (docs/architecture.md, "Durability
contract"). The server is killed without warning while clients deliver; afterwards every acknowledged
(recipient, message) pair must have a complete file in ``new/``, every file in ``new/`` must be complete
(acknowledged or not), and a restarted server must serve at once (the UNIX socket lock died with it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.mdaproc import start_server

USERS = ("alice", "bob", "carol")


def _message(marker: str) -> bytes:
    lines = [f"Subject: crash test {marker}", f"Message-ID: <{marker}@crash.test>", ""]
    lines += [f"{marker} line {index:04d} " + "x" * 60 for index in range(300)]
    lines.append(f"END-{marker}")
    return ("\r\n".join(lines) + "\r\n").encode()


class _Load:
    """Client threads delivering unique messages over LMTP and SMTP; ``acked`` holds (user, marker)."""

    def __init__(self, lmtp: tuple[str, int], smtp: tuple[str, int], prefix: str, threads: int = 6) -> None:
        self.prefix = prefix
        self.acked: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(lmtp if i % 2 else smtp, i, bool(i % 2)), daemon=True)
            for i in range(threads)
        ]

    def _run(self, address: tuple[str, int], index: int, lmtp: bool) -> None:
        serial = 0
        try:
            with Client(address, timeout=10) as client:
                client.cmd("LHLO crash.test" if lmtp else "EHLO crash.test")
                while not self.stop.is_set():
                    serial += 1
                    marker = f"{self.prefix}m{index}x{serial}"
                    users = [USERS[serial % 3], USERS[(serial + 1) % 3]]
                    _, data = transaction(
                        client, "s@crash.test", [f"{u}@example.test" for u in users], _message(marker), lmtp=lmtp
                    )
                    codes = [reply.code for reply in data]
                    with self.lock:
                        if lmtp:
                            self.acked.update((u, marker) for u, code in zip(users, codes, strict=True) if code == 250)
                        elif codes == [250]:
                            self.acked.update((u, marker) for u in users)
        except (OSError, ConnectionError, AssertionError):
            return  # the server died mid-conversation: nothing unacknowledged counts

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


def _stored(root: Path) -> dict[str, dict[str, bytes]]:
    """user → marker → file content, for every file visible in new/ and cur/."""
    found: dict[str, dict[str, bytes]] = {}
    for user in USERS:
        maildir = root / "example.test" / user / "Maildir"
        for sub in ("new", "cur"):
            directory = maildir / sub
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                content = path.read_bytes()
                marker = content.split(b"Subject: crash test ", 1)[1].split(b"\n", 1)[0].decode()
                found.setdefault(user, {})[marker] = content
    return found


def _crash_once(tmp_path: Path, round_: int, seconds: float) -> tuple[int, int]:
    root = tmp_path / "mail"
    config = basic_config(root)
    server = start_server(config, tmp_path / f"run{round_}")
    with _Load(server.lmtp, server.smtp, prefix=f"r{round_}") as load:
        time.sleep(seconds)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        load.stop.set()
    stored = _stored(root)
    for user, by_marker in stored.items():
        for marker, content in by_marker.items():
            assert content.endswith(f"END-{marker}\n".encode()), f"partial message visible: {user} {marker}"
            assert content.startswith(b"Return-Path: <s@crash.test>\nDelivered-To: "), "trace headers missing"
    missing = [(user, marker) for user, marker in load.acked if marker not in stored.get(user, {})]
    assert not missing, f"{len(missing)} acknowledged copies lost, e.g. {missing[:3]}"
    return len(load.acked), sum(len(v) for v in stored.values())


def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    acked, stored = _crash_once(tmp_path, 0, 1.5)
    assert acked > 0, "the load delivered nothing before the kill"
    print(f"\nkill -9 after 1.5 s: {acked} acknowledged copies, {stored} files visible, none partial or lost")
    restarted = start_server(basic_config(tmp_path / "mail"), tmp_path / "restart")
    try:
        with Client(restarted.lmtp) as client:
            client.cmd("LHLO again.test")
            _, data = transaction(client, "s@crash.test", ["alice@example.test"], _message("after"))
            assert data[0].code == 250
    finally:
        restarted.stop()


@pytest.mark.slow
def test_kill_9_crash_loop(tmp_path: Path) -> None:
    """Twenty crashes at varied moments, on the same mail root (run with ``-m slow``)."""
    for round_ in range(20):
        _crash_once(tmp_path, round_, 0.3 + (round_ % 5) * 0.4)
