"""``state:`` in the configuration: what ``mda check-config`` accepts and refuses (never echoing an
inline password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.core.test_config_print_and_keys import run_mda, write


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
