"""The peer helpers find the program they run, install its package when it is missing, or fail naming it."""

from __future__ import annotations

import pytest

from tests.peers import programs
from tests.peers.programs import MissingProgram, Program


@pytest.mark.parametrize(
    ("status", "installed"),
    [
        ("install ok installed", True),
        # Known from another package's metadata only: what made the Dovecot services look installed.
        ("unknown ok not-installed", False),
        ("deinstall ok config-files", False),
        ("install ok half-configured", False),
        ("install ok unpacked", False),
        ("hold ok installed", False),
        ("", False),
    ],
)
def test_only_install_ok_installed_counts_as_installed(status: str, installed: bool) -> None:
    assert programs.dpkg_installed(status) is installed


def test_a_program_on_path_or_in_sbin_is_found_without_installing() -> None:
    assert Program("sh", "dash").locate() is not None
    assert programs.require(Program("/bin/sh", "dash")) == "/bin/sh"
    assert Program("/nonexistent/program", "dash").locate() is None


@pytest.mark.root
def test_a_missing_program_fails_loudly_with_its_name_and_package() -> None:
    # swaks (a peer the suite uses anyway) does not provide this file: installing it cannot make it appear.
    with pytest.raises(MissingProgram, match=r"/nonexistent/program is missing.*Debian package swaks"):
        programs.require(Program("/nonexistent/program", "swaks"))


@pytest.mark.root
def test_a_package_that_does_not_exist_fails_loudly() -> None:
    with pytest.raises(MissingProgram, match="apt-get install"):
        programs.require(Program("/nonexistent/program", "mda-no-such-package"))
