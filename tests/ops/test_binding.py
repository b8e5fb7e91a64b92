"""Who may serve a listener: one instance per TCP port, safe UNIX socket paths, every process unprivileged."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import basic_config
from tests.mdaproc import RunningServer, start_server
from tests.ops.helpers import deliver, stored_files
from tests.ops.test_workers import _worker_pids
from tests.waiting import wait_for

SERVICE_USER = "vmail"


def _serve_fails(config: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``mda serve`` expecting it to refuse to start; returns the finished process."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mda.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "mda", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        check=False,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_instance_on_the_same_port_is_refused(start_mda, tmp_path: Path, workers: int) -> None:
    first = start_mda(basic_config(tmp_path / "first", workers=workers))
    host, port = first.lmtp
    second = basic_config(tmp_path / "second", workers=workers)
    second["listeners"] = [{"protocol": "lmtp", "bind": f"{host}:{port}"}]
    result = _serve_fails(second, tmp_path / "second-run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"address {host}:{port} is already served by another process" in result.stderr
    assert "listening" not in result.stdout
    # The first instance keeps the whole port: every connection reaches its storage.
    for _ in range(6):
        assert deliver(first.lmtp, ["alice@example.test"]) == [250]
    assert len(stored_files(tmp_path / "first", "alice")) == 6
    assert not (tmp_path / "second").exists()


# --- root: a service user, socket directories, the process tree ---------------------------------


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """A directory the service user can reach (pytest's own temporary tree is root's, mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="mda-service-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _service_config(base: Path, **overrides: Any) -> dict[str, Any]:
    user = pwd.getpwnam(SERVICE_USER)
    mail = base / "mail"
    mail.mkdir(exist_ok=True)
    os.chown(mail, user.pw_uid, user.pw_gid)
    return basic_config(mail, user=SERVICE_USER, **overrides)


def _uids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return [int(v) for v in next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]]


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                children.append(int(entry.name))
    return children


@pytest.mark.root
def test_supervisor_and_workers_all_run_as_the_service_user(service_dir: Path) -> None:
    vmail = pwd.getpwnam(SERVICE_USER)
    config = _service_config(service_dir, workers=2, metrics={"bind": "127.0.0.1:0"})
    socket_dir = service_dir / "run"
    config["listeners"].append(
        {"protocol": "lmtp", "bind": f"unix:{socket_dir}/lmtp.sock", "socket_mode": "0660", "socket_owner": "vmail"}
    )
    server = start_server(config, service_dir / "server")
    try:
        wait_for(lambda: len(_worker_pids(server.log())) == 2)
        tree = [server.process.pid, *_children(server.process.pid)]
        assert len(tree) == 3
        for pid in tree:
            assert _uids(pid) == [vmail.pw_uid] * 4, pid
        assert deliver(server.lmtp, ["alice@example.test"]) == [250]
        victim = _worker_pids(server.log())[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _worker_pids(server.log()).get(0, victim) != victim, timeout=15)
        replacement = _worker_pids(server.log())[0]
        assert _uids(replacement) == [vmail.pw_uid] * 4
        other = _worker_pids(server.log())[1]
        os.kill(other, signal.SIGSTOP)  # only the replacement can accept now
        try:
            codes = [deliver(server.lmtp, ["bob@example.test"])[0] for _ in range(4)]
            codes += [deliver(str(socket_dir / "lmtp.sock"), ["bob@example.test"])[0] for _ in range(4)]
        finally:
            os.kill(other, signal.SIGCONT)
        assert codes == [250] * 8
        assert server.stop() == 0
    finally:
        server.stop()


def _socket_config(base: Path, socket_path: Path, **listener: Any) -> dict[str, Any]:
    config = _service_config(base)
    config["listeners"].append({"protocol": "lmtp", "bind": f"unix:{socket_path}", **listener})
    return config


@pytest.mark.root
@pytest.mark.parametrize("workers", [1, 2])
def test_a_planted_symlink_lock_is_refused_and_its_target_not_created(service_dir: Path, workers: int) -> None:
    run = service_dir / "run"
    run.mkdir(mode=0o755)
    target = service_dir / "root-only"
    (run / "lmtp.sock.lock").symlink_to(target)
    config = _socket_config(service_dir, run / "lmtp.sock", socket_owner="vmail")
    config["workers"] = workers
    result = _serve_fails(config, service_dir / "server")
    assert result.returncode == 1
    assert f"lock file {run}/lmtp.sock.lock is a symbolic link" in result.stderr
    assert not target.exists() and not target.is_symlink()
    assert not (run / "lmtp.sock").exists()


@pytest.mark.root
@pytest.mark.parametrize(
    ("mode", "owner", "problem"),
    [(0o1777, "root", "is writable by every user"), (0o755, "nobody", "is owned by uid")],
)
def test_an_unsafe_socket_directory_is_refused(service_dir: Path, mode: int, owner: str, problem: str) -> None:
    run = service_dir / "run"
    run.mkdir()
    os.chmod(run, mode)
    os.chown(run, pwd.getpwnam(owner).pw_uid, -1)
    result = _serve_fails(_socket_config(service_dir, run / "lmtp.sock"), service_dir / "server")
    assert result.returncode == 1
    assert f"mda: cannot start: socket directory {run} {problem}" in result.stderr
    assert not (run / "lmtp.sock").exists() and not (run / "lmtp.sock.lock").exists()


@pytest.mark.root
@pytest.mark.parametrize("workers", [1, 2])
def test_socket_mode_and_owner_are_set_in_a_directory_the_service_user_owns(service_dir: Path, workers: int) -> None:
    vmail = pwd.getpwnam(SERVICE_USER)
    run = service_dir / "run"
    run.mkdir(mode=0o750)
    os.chown(run, vmail.pw_uid, vmail.pw_gid)
    socket_path = run / "lmtp.sock"
    socket_path.write_bytes(b"")  # a regular file where the socket goes is never replaced
    config = _socket_config(service_dir, socket_path, socket_mode="0620", socket_owner="vmail:nogroup")
    config["workers"] = workers
    result = _serve_fails(config, service_dir / "refused")
    assert result.returncode == 1 and f"{socket_path} exists and is not a socket" in result.stderr
    socket_path.unlink()
    server: RunningServer = start_server(config, service_dir / "server")
    try:
        info = os.lstat(socket_path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o620
        assert (info.st_uid, info.st_gid) == (vmail.pw_uid, grp.getgrnam("nogroup").gr_gid)
        assert sorted(p.name for p in run.iterdir()) == ["lmtp.sock", "lmtp.sock.lock"]
        assert deliver(str(socket_path), ["carol@example.test"]) == [250]
    finally:
        server.stop()


@pytest.mark.root
def test_a_directory_owned_by_the_socket_owner_is_accepted(service_dir: Path) -> None:
    """Postfix's private/ directory: owned by the user the socket is handed to anyway."""
    nobody = pwd.getpwnam("nobody")
    run = service_dir / "private"
    run.mkdir(mode=0o700)
    os.chown(run, nobody.pw_uid, nobody.pw_gid)
    server = start_server(_socket_config(service_dir, run / "mda-lmtp", socket_owner="nobody"), service_dir / "server")
    try:
        assert os.lstat(run / "mda-lmtp").st_uid == nobody.pw_uid
    finally:
        server.stop()


@pytest.mark.root
def test_user_and_socket_owner_take_numeric_ids_as_a_mailbox_owner_does(service_dir: Path) -> None:
    """``user:``, ``socket_owner`` and a mailbox ``owner`` share one parser: names or numeric ids."""
    vmail, nogroup = pwd.getpwnam(SERVICE_USER), grp.getgrnam("nogroup")
    run = service_dir / "run"
    run.mkdir(mode=0o755)
    config = _socket_config(service_dir, run / "lmtp.sock", socket_owner=f"{vmail.pw_uid}:{nogroup.gr_gid}")
    config["user"] = str(vmail.pw_uid)
    server = start_server(config, service_dir / "server")
    try:
        info = os.lstat(run / "lmtp.sock")
        assert (info.st_uid, info.st_gid) == (vmail.pw_uid, nogroup.gr_gid)
        wait_for(lambda: _uids(server.process.pid) == [vmail.pw_uid] * 4)  # dropped after the start-up lines
        assert deliver(str(run / "lmtp.sock"), ["carol@example.test"]) == [250]
    finally:
        server.stop()
    config["user"] = "no-such-user-here"
    result = _serve_fails(config, service_dir / "refused")
    assert result.returncode == 1 and "unknown user 'no-such-user-here'" in result.stderr
