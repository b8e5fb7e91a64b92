"""Several workers: both processes take connections, metrics add up, a dead worker is replaced; the default."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from mda.affinity import worker_cpu
from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.ops.helpers import MESSAGE, scrape, stored_files, value
from tests.waiting import wait_for

CONNECTIONS = 24


def _worker_pids(log: str) -> dict[int, int]:
    """worker index → pid, from the ``started`` lines (the latest per index)."""
    pids: dict[int, int] = {}
    for line in log.splitlines():
        match = re.search(r"event=started worker=(\d+) .*pid=(\d+)", line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


def _parallel_deliveries(address: tuple[str, int] | str, count: int) -> list[int]:
    """``count`` connections open at once, each delivering one message; returns the DATA codes."""
    codes: list[int] = []
    barrier = threading.Barrier(count)
    lock = threading.Lock()

    def one() -> None:
        with Client(address) as client:
            barrier.wait(10)
            client.cmd("LHLO x")
            _, data = transaction(client, "s@example.net", ["alice@example.test"], MESSAGE)
            client.cmd("QUIT")
        with lock:
            codes.append(data[0].code)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return codes


def test_two_workers_share_tcp_and_unix_listeners_and_metrics_add_up(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    socket_path = tmp_path / "lmtp.sock"
    config = basic_config(root, workers=2, metrics={"bind": "127.0.0.1:0"})
    config["listeners"].append({"protocol": "lmtp", "bind": f"unix:{socket_path}"})
    server = start_mda(config)
    assert [line.split(" ", 1)[0] for line in server.lines] == ["listening"] * 3 + ["metrics", "delivering"]
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    assert _parallel_deliveries(server.lmtp, CONNECTIONS) == [250] * CONNECTIONS
    assert _parallel_deliveries(str(socket_path), 4) == [250] * 4
    wait_for(lambda: set(re.findall(r"event=session_open worker=(\d)", server.log())) == {"0", "1"})
    samples = scrape(server)
    total = CONNECTIONS + 4
    assert value(samples, "mda_deliveries_total", result="delivered") == total
    assert value(samples, "mda_sessions_total") == total
    assert value(samples, "mda_messages_received_total", protocol="lmtp") == total
    assert value(samples, "mda_build_info") == 1
    assert len(stored_files(root, "alice")) == total


def test_dead_worker_is_replaced_and_sigterm_stops_all(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", workers=2, metrics={"bind": "127.0.0.1:0"}))
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    pids = _worker_pids(server.log())
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: _worker_pids(server.log()).get(0, pids[0]) != pids[0], timeout=15)
    assert _parallel_deliveries(server.lmtp, 6) == [250] * 6
    assert server.stop() == 0
    for pid in _worker_pids(server.log()).values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_every_worker_reloads_on_sighup(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    config = basic_config(root, workers=2, metrics={"bind": "127.0.0.1:0"}, users={"alice@example.test": {}})
    server = start_mda(config)
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    config["users"] = {"alice@example.test": {}, "dave@example.test": {}}
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.signal(signal.SIGHUP)
    wait_for(lambda: set(re.findall(r"event=reloaded worker=(\d)", server.log())) == {"0", "1"})
    codes: list[int] = []
    for _ in range(8):  # new connections land on both workers; each must know dave now
        with Client(server.lmtp) as client:
            client.cmd("LHLO x")
            _, data = transaction(client, "s@example.net", ["dave@example.test"], MESSAGE)
            codes.append(data[0].code)
    assert codes == [250] * 8


def test_a_reload_is_counted_once_whatever_the_number_of_workers(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", workers=2, metrics={"bind": "127.0.0.1:0"}))
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: set(re.findall(r"event=reloaded worker=(\d)", server.log())) == {"0", "1"})
    samples = scrape(server)
    assert value(samples, "mda_config_reloads_total", result="success") == 1
    assert value(samples, "mda_config_reloads_total", result="failure") == 0
    server.config_path.write_text("listeners: [")
    wait_for(lambda: "event=reload_failed" in server.log())
    samples = scrape(server)
    assert value(samples, "mda_config_reloads_total", result="failure") == 1
    assert value(samples, "mda_config_reloads_total", result="success") == 1


def test_a_replacement_worker_starts_on_the_configuration_in_use(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    config = basic_config(root, workers=2, users={"alice@example.test": {}})
    server = start_mda(config)
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    config["users"] = {"alice@example.test": {}, "dave@example.test": {}}
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.signal(signal.SIGHUP)
    wait_for(lambda: set(re.findall(r"event=reloaded worker=(\d)", server.log())) == {"0", "1"})
    pids = _worker_pids(server.log())
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: _worker_pids(server.log()).get(0, pids[0]) != pids[0], timeout=15)
    os.kill(pids[1], signal.SIGSTOP)  # the replacement alone accepts: its first connection is the test
    try:
        with Client(server.lmtp) as client:
            client.cmd("LHLO x")
            _, data = transaction(client, "s@example.net", ["dave@example.test"], MESSAGE)
    finally:
        os.kill(pids[1], signal.SIGCONT)
    assert [reply.code for reply in data] == [250]
    assert len(re.findall(r"event=reloaded worker=0", server.log())) == 1  # it had nothing to reload


def test_sigterm_during_a_restart_back_off_stops_without_starting_a_worker(start_mda, tmp_path: Path) -> None:
    """A worker that dies right after its start is replaced only after ``RESTART_BACKOFF``; a SIGTERM in
    that time stops the service at once, and the pending replacement is never started."""
    server = start_mda(basic_config(tmp_path / "mail", workers=2))
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    os.kill(_worker_pids(server.log())[0], signal.SIGKILL)
    replacement = wait_for(lambda: re.search(r"event=worker_started worker=0 pid=(\d+)", server.log()))
    os.kill(int(replacement.group(1)), signal.SIGKILL)  # within RESTART_BACKOFF of its start
    wait_for(lambda: server.log().count("event=worker_died worker=0") == 2, describe=server.log)
    assert server.stop() == 0
    log = server.log()
    assert log.count("event=worker_started") == 1, log
    assert "event=stopped workers=2" in log


def test_the_default_is_one_worker_per_core(start_mda, tmp_path: Path) -> None:
    """No ``workers`` key: one worker process per usable core, under a supervisor when there are several."""
    cores = len(os.sched_getaffinity(0))
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    assert [line.split(" ", 1)[0] for line in server.lines] == ["listening"] * 2 + ["metrics", "delivering"]
    if cores == 1:
        pytest.fail("this test needs a machine with two cores at least")
    wait_for(lambda: len(_worker_pids(server.log())) == cores)
    assert f"event=supervisor_started workers={cores} " in server.log()
    assert _parallel_deliveries(server.lmtp, 8) == [250] * 8
    printed = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(server.config_path), "--print"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "\nworkers: auto\n" in printed.stdout


def test_listeners_written_alike_are_two_sockets(start_mda, tmp_path: Path) -> None:
    """Two listeners both written ``127.0.0.1:0`` are two ports, each shared by every worker."""
    listeners = [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "lmtp", "bind": "127.0.0.1:0"}]
    server = start_mda(basic_config(tmp_path / "mail", workers=2, listeners=listeners))
    first, second = server.tcp["lmtp"]
    assert first != second
    for address in (first, second):
        assert _parallel_deliveries(address, 4) == [250] * 4


def test_a_reload_that_adds_a_listener_replaces_the_workers(start_mda, tmp_path: Path) -> None:
    """Running workers cannot take a socket bound after their start: new workers inherit it, and the
    old ones drain and exit."""
    root = tmp_path / "mail"
    socket_path = tmp_path / "lmtp.sock"
    config = basic_config(root, workers=2, metrics={"bind": "127.0.0.1:0"}, users={"alice@example.test": {}})
    server = start_mda(config)
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    old = set(_worker_pids(server.log()).values())
    config["listeners"] = [config["listeners"][0], {"protocol": "lmtp", "bind": f"unix:{socket_path}"}]
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.signal(signal.SIGHUP)
    server.wait_for_log("event=workers_replaced")
    # Each new worker's "started" line comes from its own log writer, maybe after the supervisor's line.
    wait_for(lambda: not set(_worker_pids(server.log()).values()) & old)
    assert len(_worker_pids(server.log())) == 2
    for pid in old:
        wait_for(lambda pid=pid: not _running(pid), timeout=15)
    assert _parallel_deliveries(str(socket_path), 4) == [250] * 4
    assert _parallel_deliveries(server.lmtp, 4) == [250] * 4, "a kept listener stays open"
    with pytest.raises(OSError):
        Client(server.smtp, timeout=2).close()
    assert value(scrape(server), "mda_config_reloads_total", result="success") == 1
    assert len(stored_files(root, "alice")) == 8
    assert server.stop() == 0


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workers_stop_when_the_supervisor_is_killed(start_mda, tmp_path: Path) -> None:
    """``kill -9`` of the supervisor alone: its workers drain and exit, and the port is free again."""
    server = start_mda(basic_config(tmp_path / "mail", workers=2))
    wait_for(lambda: len(_worker_pids(server.log())) == 2)
    workers = _worker_pids(server.log()).values()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    for pid in workers:
        wait_for(lambda pid=pid: not _running(pid), timeout=15)
    with pytest.raises(ConnectionRefusedError):
        Client(server.lmtp, timeout=2).close()


def _cpus_of_threads(pid: int) -> set[str]:
    """The ``Cpus_allowed_list`` of every thread of process ``pid``."""
    lists = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as status:
            lists |= {line.split(":", 1)[1].strip() for line in status if line.startswith("Cpus_allowed_list:")}
    return lists


def test_each_worker_runs_on_a_core_of_its_own(start_mda, tmp_path: Path) -> None:
    """Worker ``i`` and every one of its threads (event loop, storage, log writer) run on the ``i``-th
    usable core; a replacement keeps its index's core; the supervisor stays free."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail("this test needs a machine with two cores at least")
    server = start_mda(basic_config(tmp_path / "mail", workers=2))
    pids = wait_for(lambda: (found := _worker_pids(server.log())) and len(found) == 2 and found)
    assert _parallel_deliveries(server.lmtp, 8) == [250] * 8  # storage threads started: they are pinned too
    for index, pid in pids.items():
        assert _cpus_of_threads(pid) == {str(cores[index])}
    assert os.sched_getaffinity(server.process.pid) == set(cores)
    os.kill(pids[1], signal.SIGKILL)
    replacement = wait_for(
        lambda: _worker_pids(server.log()).get(1) not in (None, pids[1]) and _worker_pids(server.log())[1]
    )
    assert _parallel_deliveries(server.lmtp, 4) == [250] * 4
    assert _cpus_of_threads(replacement) == {str(cores[1])}


def test_workers_take_the_usable_cores_in_turn() -> None:
    """More workers than cores share them round robin, in the order of the cores this process may use
    (a cpuset's, not 0..N); one usable core pins nothing."""
    assert [worker_cpu(index, {6, 2, 4}) for index in range(5)] == [2, 4, 6, 2, 4]
    assert worker_cpu(0, {3}) is None


def test_a_refused_pinning_is_logged_and_changes_nothing() -> None:
    """A core the process may not use (or a sandbox refusing ``sched_setaffinity``): a warning, the
    process keeps its cores and goes on."""
    code = (
        "import os\n"
        "from mda import logs\n"
        "from mda.affinity import pin_process\n"
        "logs.setup('text', 'info')\n"
        "before = os.sched_getaffinity(0)\n"
        "pin_process(4095)\n"
        "logs.flush()\n"
        "assert os.sched_getaffinity(0) == before\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "level=warning event=cpu_affinity_failed cpu=4095 " in result.stderr
