"""Who holds a pending duplicate claim: a claim whose owner process is gone — exited, killed and not yet
reaped (a zombie), or its pid reused by another process — must not hold back the MX's retry."""

from __future__ import annotations

import os
import subprocess
import sys

from mda.statestore import owner_is_dead, owner_token
from tests.waiting import wait_for


def _token_of(pid: int, start: str) -> str:
    host = os.uname().nodename
    return f"{host}:{pid}:{start}:0123456789ab"


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2 :].split()


def test_this_process_is_alive() -> None:
    assert not owner_is_dead(owner_token())


def test_a_process_that_exited_and_was_reaped_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    token = _token_of(child.pid, _stat_fields(child.pid)[19])
    assert not owner_is_dead(token)
    child.communicate(b"")
    assert owner_is_dead(token)


def test_a_killed_worker_nobody_reaped_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = _token_of(child.pid, _stat_fields(child.pid)[19])
        assert not owner_is_dead(token)
        child.kill()
        wait_for(lambda: _stat_fields(child.pid)[0] == "Z", 10, what="the child is a zombie")
        assert owner_is_dead(token)  # still in the process table, but it runs no more
    finally:
        child.kill()
        child.wait()


def test_a_pid_now_used_by_a_process_started_at_another_time_is_dead() -> None:
    start = _stat_fields(os.getpid())[19]
    assert not owner_is_dead(_token_of(os.getpid(), start))
    assert owner_is_dead(_token_of(os.getpid(), str(int(start) + 1)))


def test_old_tokens_without_a_start_time_are_judged_on_the_pid() -> None:
    host = os.uname().nodename
    assert not owner_is_dead(f"{host}:{os.getpid()}:0123456789ab")


def test_another_hosts_process_or_a_malformed_token_is_never_judged_dead() -> None:
    assert not owner_is_dead(f"another-host.invalid:{os.getpid()}:1:0123456789ab")
    assert not owner_is_dead("garbage")
    assert not owner_is_dead("")
    assert not owner_is_dead(f"{os.uname().nodename}:notapid:1:ab")
