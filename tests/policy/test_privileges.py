"""Settings that need root are refused by ``check-config`` and ``serve`` when the process cannot honour them.

``socket_owner`` is a ``chown`` done at bind time, before ``user:`` takes effect: it needs mda started as
root. ``passwd: true`` writes into system users' homes as each user: ``serve`` must start as root and stay
root. Otherwise ``serve`` used to start and then fail (``Operation not permitted`` on the socket, or
``451 4.3.0`` at every delivery after ``250`` at RCPT). The unprivileged runs use the real user
``nobody`` through ``runuser``, as the systemd unit runs ``check-config`` and ``serve`` as its ``User=``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import basic_config
from tests.peers.postfix import user_python

pytestmark = pytest.mark.root


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "mda.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o644)
    return path


def run_as(user: str | None, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mda ARGS`` as root (``user`` None) or as ``user``; a serve that starts is stopped."""
    if user is None:
        command = [sys.executable, "-m", "mda", *args]
    else:
        python, env = user_python(directory, user)
        command = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()), python, "-m", "mda"]
        command += list(args)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=directory)


def socket_config(directory: Path, **listener: Any) -> tuple[Path, Path]:
    run = directory / "run"
    run.mkdir(mode=0o777, exist_ok=True)
    run.chmod(0o777)
    socket_path = run / "lmtp.sock"
    config = basic_config(directory / "mail")
    config["listeners"] = [{"protocol": "lmtp", "bind": f"unix:{socket_path}", "socket_mode": "0660", **listener}]
    config.pop("metrics", None)
    return write_config(directory, config), socket_path


def test_socket_owner_without_root_is_refused_with_the_path_and_the_fix(public_dir: Path) -> None:
    path, socket_path = socket_config(public_dir, socket_owner="nobody")
    for command in ("check-config", "serve"):
        result = run_as("nobody", public_dir, command, "--config", str(path))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "socket_owner nobody" in result.stderr and "chown" in result.stderr, result.stderr
        assert str(socket_path) in result.stderr and 'socket_mode: "0660"' in result.stderr, result.stderr
        assert "usermod -aG" in result.stderr
    assert not socket_path.exists()
    # As root (who can chown before dropping to user:), the same file is fine.
    assert run_as(None, public_dir, "check-config", "--config", str(path)).returncode == 0


def test_group_access_without_socket_owner_passes_as_the_mail_user(public_dir: Path) -> None:
    path, _ = socket_config(public_dir)
    result = run_as("nobody", public_dir, "check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr


def passwd_config(directory: Path, **overrides: Any) -> Path:
    config = basic_config(directory / "mail", domains={"example.test": {"passwd": True}}, users={}, **overrides)
    return write_config(directory, config)


def test_passwd_domain_with_user_is_refused_by_check_config_and_serve(public_dir: Path) -> None:
    path = passwd_config(public_dir, user="nobody")
    for command in ("check-config", "serve"):
        result = run_as(None, public_dir, command, "--config", str(path))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "domains: example.test: passwd: true needs mda to stay root, but user: nobody" in result.stderr
        assert "listening" not in result.stdout


def test_passwd_domain_without_root_is_refused(public_dir: Path) -> None:
    path = passwd_config(public_dir)
    result = run_as("nobody", public_dir, "check-config", "--config", str(path))
    assert result.returncode == 1, result.stdout
    assert "passwd: true delivers into system users' home directories" in result.stderr
    assert "started as root" in result.stderr


def test_passwd_domain_as_root_without_user_is_valid(public_dir: Path) -> None:
    result = run_as(None, public_dir, "check-config", "--config", str(passwd_config(public_dir)))
    assert result.returncode == 0, result.stderr
