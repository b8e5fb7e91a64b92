"""Shared fixtures: a real ``mda serve`` process on free ports, and the root-test policy.

Tests marked ``root`` (tmpfs mounts, system users, private Postfix/Dovecot/Prometheus) are skipped
outside root with the reason printed; under ``CI=true`` such a skip is a failure instead, so CI can never
pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mdaproc import RunningServer, start_server

REPOSITORY = Path(__file__).resolve().parents[1]
# Every `python -m mda` a test starts runs this checkout's code, whatever other copy is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT or IN_CI:
        return
    skip_root = pytest.mark.skip(reason="needs root (tmpfs mounts, system users or private mail servers)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip_root)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "root" in item.keywords and IN_CI and not IS_ROOT:
        pytest.fail("a root test cannot run: CI=true requires running the suite as root")


@pytest.fixture
def start_mda(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``start_mda(config_dict_or_yaml_text)`` → a running server; stopped at teardown."""
    servers: list[RunningServer] = []

    def start(config: dict[str, Any] | str, **kwargs: Any) -> RunningServer:
        server = start_server(config, tmp_path / f"server{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse, for what an unprivileged process must read (pytest's own
    temporary directories are private to root, 0700); removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mda-public-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def basic_config(root: Path, **overrides: Any) -> dict[str, Any]:
    """A small configuration on free loopback ports delivering under ``root``."""
    config: dict[str, Any] = {
        "hostname": "mx.example.test",
        "listeners": [
            {"protocol": "lmtp", "bind": "127.0.0.1:0"},
            {"protocol": "smtp", "bind": "127.0.0.1:0"},
        ],
        "domains": ["example.test"],
        "storage": {"format": "maildir", "path": f"{root}/{{domain}}/{{user}}/Maildir", "fsync": True},
        "users": {"alice@example.test": {}, "bob@example.test": {}, "carol@example.test": {}},
    }
    config.update(overrides)
    return config
