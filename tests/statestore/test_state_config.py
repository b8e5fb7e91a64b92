"""``state:`` in the configuration: what ``mda check-config`` accepts and refuses (never echoing an
inline password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.core.test_config_print_and_keys import run_mda, write
from tests.peers.dovecot import free_port


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("sqlite:///var/lib/mda/state.sqlite", "postgresql:// URL"),
        ("mysql://mda:hunter2@db/mail", "postgresql:// URL"),
        (5, "postgresql:// URL"),
        ({"url": "postgresql://db/mail", "passwd_file": "x"}, "unknown key 'passwd_file'"),
        ({"url": "postgresql://db/mail", "pool_size": 0}, "pool_size"),
        ({"url": "postgresql://db/mail", "timeout": "0s"}, "timeout"),
        ({"password_file": "x"}, "url: required"),
        ("postgresql://db/mail\nx", "control characters"),
    ],
)
def test_bad_state_values_are_refused(tmp_path: Path, state: object, error: str) -> None:
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", state=state))
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode != 0
    assert "state" in result.stderr and error in result.stderr, result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("state", ["", "postgresql://mda:inline@127.0.0.1:5432/mail", {"url": "postgres://db/mail"}])
def test_good_state_values_are_accepted(tmp_path: Path, state: object) -> None:
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", state=state))
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "inline" not in result.stdout + result.stderr


def test_connect_opens_the_sqlite_state_files_and_creates_nothing(tmp_path: Path) -> None:
    """``check-config --connect`` checks ``state:`` as it checks each userdb source: one line, exit 1 when
    the store cannot be used; for SQLite files in ``state_dir`` nothing is created."""
    state = tmp_path / "state"
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", state_dir=str(state)))
    result = run_mda("check-config", "--config", str(config), "--connect")
    assert result.returncode == 0, result
    assert f"state sqlite {state}: ok\n" in result.stdout
    assert not state.exists() and not (tmp_path / "mail").exists()

    state.mkdir()
    (state / "duplicates.sqlite").write_bytes(b"not a database, " * 64)
    result = run_mda("check-config", "--config", str(config), "--connect")
    assert result.returncode == 1, result
    assert f"state sqlite {state}: duplicates.sqlite: DatabaseError: file is not a database\n" in result.stdout

    (state / "duplicates.sqlite").unlink()
    state.rmdir()
    state.write_text("a file where the directory goes")
    result = run_mda("check-config", "--config", str(config), "--connect")
    assert result.returncode == 1, result
    assert f"state sqlite {state}: {state} is not a directory\n" in result.stdout


def test_connect_names_a_postgresql_store_that_cannot_be_reached(tmp_path: Path) -> None:
    """Nothing listens on the port, or the password file is missing: exit 1, the store named, the
    password never shown. (A reachable server answers ``ok``: tests/statestore/test_shared_state_postgres.py.)"""
    port = free_port()
    url = f"postgresql://mda:hunter2@127.0.0.1:{port}/mail"
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", state={"url": url, "timeout": "2s"}))
    result = run_mda("check-config", "--config", str(config), "--connect")
    assert result.returncode == 1, result
    assert f"state postgresql postgresql://mda:***@127.0.0.1:{port}/mail: OperationalError: " in result.stdout
    assert "hunter2" not in result.stdout + result.stderr
    missing = tmp_path / "missing-password"
    state = {"url": f"postgresql://mda@127.0.0.1:{port}/mail", "password_file": str(missing)}
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", state=state))
    result = run_mda("check-config", "--config", str(config), "--connect")
    assert result.returncode == 1, result
    assert f"password_file {missing}: No such file or directory\n" in result.stdout
