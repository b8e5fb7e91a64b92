"""Fixtures for the Sieve tests."""

from __future__ import annotations

import pwd
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sieve_oracle import ORACLE_USER, Pigeonhole

from tests.peers import programs


@pytest.fixture(scope="session")
def oracle_user() -> pwd.struct_passwd:
    """The unprivileged user ``sieve-test`` runs as, created on first use."""
    programs.ensure_system_user(ORACLE_USER)
    return pwd.getpwnam(ORACLE_USER)


@pytest.fixture
def pigeonhole(oracle_user: pwd.struct_passwd) -> Iterator[Pigeonhole]:
    """A ``sieve-test`` runner in a directory of its own; pytest's ``tmp_path`` sits under a 0700
    directory the oracle user cannot enter."""
    with tempfile.TemporaryDirectory(prefix="mda-sieve-") as name:
        yield Pigeonhole(Path(name), oracle_user.pw_uid, oracle_user.pw_gid, programs.require(programs.SIEVE_TEST))
