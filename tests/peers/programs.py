"""The programs the tests run beside mda, installed from Debian when missing, checked always.

A test needs a program (``sieve-test``, ``/usr/lib/dovecot/pop3``, ``promtool``, ``smtp-source``), not a
package: dpkg "knows" packages it has only heard of (``unknown ok not-installed``), and a package can be
installed while the file a test runs is gone. So every helper asks :func:`require` for the very program
it will run. When the program is missing, the package that provides it is installed (reinstalled when
dpkg claims it is there), and the program is looked for again; when it is still missing the test fails
with both names, instead of a peer that answers nothing (a Sieve oracle listing "no actions").

The benchmark harness in ``contrib/bench`` installs its peers through this module too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

# Postfix asks which kind of mail system to configure; "No configuration" leaves the packaged service
# unconfigured, which is what a machine running private instances wants.
POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration\n"
# dpkg's status for a package whose files are all on disk: want=install, ok, status=installed.
DPKG_INSTALLED = "install ok installed"
# Wait for another apt/dpkg (a parallel test run, unattended upgrades) instead of failing at once.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=600")


class MissingProgram(RuntimeError):
    """A program a test needs is not on this machine and installing its package did not bring it."""


@dataclass(frozen=True)
class Program:
    """A program a test runs: a name looked up on PATH, or an absolute path; and its Debian package."""

    name: str
    package: str
    preseed: str = ""

    def locate(self) -> str | None:
        if os.path.isabs(self.name):
            return self.name if os.access(self.name, os.X_OK) else None
        return shutil.which(self.name) or _in_sbin(self.name)


SIEVE_TEST = Program("sieve-test", "dovecot-sieve")
DOVECOT = Program("dovecot", "dovecot-core")
DOVEADM = Program("doveadm", "dovecot-core")
DOVECOT_IMAP = Program("/usr/lib/dovecot/imap", "dovecot-imapd")
DOVECOT_POP3 = Program("/usr/lib/dovecot/pop3", "dovecot-pop3d")
DOVECOT_LMTP = Program("/usr/lib/dovecot/lmtp", "dovecot-lmtpd")
DOVECOT_MANAGESIEVE = Program("/usr/lib/dovecot/managesieve", "dovecot-managesieved")
SIEVE_CONNECT = Program("sieve-connect", "sieve-connect")
POSTFIX = Program("postfix", "postfix", POSTFIX_PRESEED)
POSTQUEUE = Program("postqueue", "postfix", POSTFIX_PRESEED)
SMTP_SOURCE = Program("smtp-source", "postfix", POSTFIX_PRESEED)
SENDMAIL = Program("/usr/sbin/sendmail", "postfix", POSTFIX_PRESEED)
PROMETHEUS = Program("prometheus", "prometheus")
PROMTOOL = Program("promtool", "prometheus")
SWAKS = Program("swaks", "swaks")
FAIL2BAN_REGEX = Program("fail2ban-regex", "fail2ban")
SYSTEM_PYTHON = Program("/usr/bin/python3", "python3")

_apt_updated = False


def require(program: Program) -> str:
    """The path of ``program``; installs its package first when it is missing, fails naming both."""
    require_that(program.name, program.package, lambda: program.locate() is not None, preseed=program.preseed)
    found = program.locate()
    assert found is not None
    return found


def require_that(what: str, package: str, present: Callable[[], bool], *, preseed: str = "") -> None:
    """Make ``present()`` true by installing ``package`` (reinstalling it when dpkg says it is there);
    fail naming ``what`` and the package when it is still false. For what is not a program on its own,
    such as a Python module of Debian's python3."""
    if present():
        return
    install(package, preseed=preseed, reinstall=dpkg_installed(dpkg_status(package)))
    if not present():
        raise MissingProgram(f"{what} is missing, and installing the Debian package {package} did not provide it")


def require_all(*programs: Program) -> list[str]:
    return [require(program) for program in programs]


def install(package: str, *, preseed: str = "", reinstall: bool = False) -> None:
    """``apt-get install`` one package (``apt-get update`` once per process first), as root only."""
    global _apt_updated
    if os.geteuid() != 0:
        raise MissingProgram(f"the Debian package {package} is needed, and only root can install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if preseed:
        subprocess.run(["debconf-set-selections"], input=preseed, text=True, check=True)
    if not _apt_updated:
        _run_apt(["update", "-q"], env)
        _apt_updated = True
    _run_apt(["install", "-y", "-q", *(["--reinstall"] if reinstall else []), package], env)


def ensure_system_user(name: str) -> tuple[int, int]:
    """(uid, gid) of a system user without login or home, created when missing.

    Dovecot's mail processes and ``sieve-test`` refuse uid 0, so they run as such a user.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        # Exit 9: another process created it meanwhile (test runs and benchmarks side by side).
        if result.returncode not in (0, 9):
            raise MissingProgram(f"useradd {name} failed: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def dpkg_status(package: str) -> str:
    """dpkg's ``${Status}`` of ``package`` (``""`` when dpkg has never heard of it)."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def dpkg_installed(status: str) -> bool:
    """Whether a dpkg ``${Status}`` line means the package's files are on disk.

    Only ``install ok installed`` does: ``unknown ok not-installed`` (known from a dependency's
    metadata), ``deinstall ok config-files`` (removed, configuration kept) and ``install ok
    half-configured`` all end in "installed" or look close to it, and none of them is usable.
    """
    return status.split() == DPKG_INSTALLED.split()


def _run_apt(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(["apt-get", *APT_LOCK_WAIT, *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MissingProgram(f"apt-get {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def _in_sbin(name: str) -> str | None:
    """Programs in /usr/sbin are not on a non-login root PATH everywhere (``postfix``, ``dovecot``)."""
    for directory in ("/usr/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None
