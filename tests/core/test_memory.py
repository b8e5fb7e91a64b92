"""Memory per session: sessions part-way through DATA stay within a bound, and it is given back.

The bound is the one README.md documents ("Memory"): the server's resident set stays under
``BASELINE + spool_memory + sessions × PER_SESSION`` (1000 sessions with the default 64 MiB budget:
under 256 MiB), and after the sessions close it returns to within ``RETURN_MARGIN`` of where it started.
The default run opens ``SESSIONS`` sessions with a small budget, so that most of them spill; the full
thousand is marked ``slow``. The bound is per process: these servers run one (``workers: 1``), so that
every session lands in the process measured.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.core.test_config_and_cli import run_mda
from tests.core.test_lmtp_delivery import maildir_files
from tests.ops.helpers import scrape, value
from tests.waiting import wait_for

MiB = 1024 * 1024
BASELINE = 64 * MiB
"""The interpreter, mda's modules and its idle structures (about 40 MiB measured)."""
PER_SESSION = 128 * 1024
"""What one session waiting in DATA may hold besides its spool: stream buffers, its objects."""
RETURN_MARGIN = 32 * MiB
"""How close to its starting size the server comes back once every session has closed."""
SESSIONS = 100
PARTIAL = int(1.5 * MiB)
"""What each session sends of its message before it stops, without the final dot."""
LINE = b"x" * 76 + b"\r\n"


def resident(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of a process, in bytes."""
    sizes = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            sizes[name] = int(rest.split()[0]) * 1024
    return sizes


def unread_bytes(port: int) -> int:
    """Bytes on their way to ``port`` on 127.0.0.1: unacknowledged by the kernel or unread by the server."""
    pending = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        send_queue, receive_queue = (int(part, 16) for part in fields[4].split(":"))
        if local == port:
            pending += receive_queue
        elif remote == port:
            pending += send_queue
    return pending


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


def sessions_in_data(start_mda: Any, tmp_path: Path, sessions: int, spool_memory: int, *, bdat: bool = False) -> None:
    """Open ``sessions`` sessions that stop part-way through DATA (or a BDAT chunk); check RSS with
    them, and after they close."""
    needed = sessions * 3 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed + sessions:
        # Root may raise its own hard limit; the server started below inherits it.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed + sessions))
        except (ValueError, OSError) as error:
            pytest.fail(f"the hard open files limit ({hard}) is too low for {sessions} sessions: {error}")
    config = basic_config(
        tmp_path / "mail",
        workers=1,
        metrics={"bind": "127.0.0.1:0"},
        limits={
            "max_connections": sessions + 10,
            "max_connections_per_client": sessions + 10,
            "spool_memory": spool_memory,
        },
    )
    # The server starts with the common soft limit of 1024 and must raise its own to hold every
    # session's socket and spool file; this process raises its own for the clients.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        server = start_mda(config)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    pid = server.process.pid
    assert open_files_limit(pid) >= min(needed, hard)
    start = resident(pid)["VmRSS"]
    partial = b"Subject: partial\r\n\r\n" + LINE * (PARTIAL // len(LINE))
    clients: list[Client] = []
    try:
        for _ in range(sessions):
            client = Client(server.lmtp)
            clients.append(client)
            client.cmd("LHLO client.test")
            assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
            assert client.cmd("RCPT TO:<alice@example.test>").code == 250
            if bdat:
                client.send(b"BDAT %d LAST\r\n" % (2 * len(partial)) + partial)
            else:
                assert client.cmd("DATA").code == 354
                client.send(partial)
        wait_for(lambda: unread_bytes(server.lmtp[1]) == 0, timeout=120, what="the server read every partial message")
        during = resident(pid)
        bound = BASELINE + spool_memory + sessions * PER_SESSION
        print(
            f"RSS start {start / MiB:.0f} MiB, {sessions} sessions in DATA {during['VmRSS'] / MiB:.0f} MiB "
            f"(peak {during['VmHWM'] / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB)"
        )
        assert during["VmHWM"] <= bound
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: value(scrape(server), "mda_sessions_open") == 0, timeout=60, what="mda_sessions_open 0")
    after = resident(pid)["VmRSS"]
    print(f"RSS after close {after / MiB:.0f} MiB")
    assert after <= start + RETURN_MARGIN
    assert maildir_files(tmp_path / "mail", "alice") == []


@pytest.mark.parametrize("bdat", [False, True], ids=["data", "bdat"])
def test_sessions_in_data_stay_within_the_memory_bound_and_give_it_back(start_mda, tmp_path, bdat):
    sessions_in_data(start_mda, tmp_path, SESSIONS, 16 * MiB, bdat=bdat)


@pytest.mark.slow
def test_thousand_sessions_in_data_stay_under_256_mib(start_mda, tmp_path):
    bound = BASELINE + 64 * MiB + 1000 * PER_SESSION
    assert bound <= 256 * MiB
    sessions_in_data(start_mda, tmp_path, 1000, 64 * MiB)


def test_without_spool_memory_every_message_spills_and_is_stored_exactly(start_mda, tmp_path):
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, limits={"spool_memory": 0}))
    body = b"".join(b"line %d of a spilled message\r\n" % i for i in range(20000))
    message = b"From: a@remote.test\r\nSubject: spilled\r\n\r\n" + body
    looping = b"Delivered-To: alice@example.test\r\nSubject: loop\r\n\r\nhello\r\n"
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _, data = transaction(client, "s@remote.test", ["alice@example.test"], message)
        assert [d.code for d in data] == [250]
        # The loop check reads the header section back from the spool file.
        _, data = transaction(client, "s@remote.test", ["alice@example.test"], looping)
        assert [(d.code, d.enhanced) for d in data] == [(554, "5.4.6")]
    [stored] = maildir_files(root, "alice")
    assert stored.read_bytes().endswith(message.replace(b"\r\n", b"\n"))


def spool_files(pid: int, directory: Path) -> int:
    """Unnamed spool files the server holds open in ``directory``."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(f"{directory}/") and target.endswith("(deleted)"):
                count += 1
    return count


def test_spool_memory_decides_what_spills_and_follows_a_reload(start_mda, tmp_path):
    """A message part-way through DATA stays in memory under the budget, in a file beyond it; a reload
    that changes ``limits.spool_memory`` applies to the next spool. The spool directory (``state_dir``)
    does not exist yet: the first spill creates it."""
    spool_dir = tmp_path / "state"
    config = basic_config(tmp_path / "mail", workers=1, state_dir=str(spool_dir), limits={"spool_memory": "1M"})
    server = start_mda(config)
    pid, port = server.process.pid, server.lmtp[1]
    part = b"Subject: part\r\n\r\n" + LINE * 4000  # 312 KiB: in memory under 1M
    with Client(server.lmtp) as first:
        first.cmd("LHLO client.test")
        transaction_start(first)
        first.send(part)
        wait_for(lambda: unread_bytes(port) == 0, what="the server read the first part")
        assert spool_files(pid, spool_dir) == 0
        config["limits"] = {"spool_memory": 0}
        server.config_path.write_text(yaml.safe_dump(config))
        server.signal(signal.SIGHUP)
        server.wait_for_log("event=reloaded")
        with Client(server.lmtp) as second:
            second.cmd("LHLO client.test")
            transaction_start(second)
            second.send(part)
            wait_for(lambda: spool_files(pid, spool_dir) == 1, what="one spool file")
    wait_for(lambda: spool_files(pid, spool_dir) == 0, what="no spool file")


def transaction_start(client: Client) -> None:
    assert client.cmd("MAIL FROM:<s@remote.test>").code == 250
    assert client.cmd("RCPT TO:<alice@example.test>").code == 250
    assert client.cmd("DATA").code == 354


def test_spool_memory_is_set_for_the_whole_process_only(tmp_path):
    config = tmp_path / "mda.yaml"
    config.write_text(
        "listeners:\n  - protocol: lmtp\n    bind: 127.0.0.1:0\n    limits: {spool_memory: 1M}\ndomains: [a.test]\n"
    )
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:4: listeners[0].limits.spool_memory"), result.stderr

    config.write_text(
        "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nlimits: {spool_memory: 1M}\n"
    )
    result = run_mda("check-config", "--config", str(config), "--print")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["limits"]["spool_memory"] == MiB
    assert "spool_memory" not in printed["listeners"][0]["limits"]
