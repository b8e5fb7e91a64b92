"""Install the comparison programs and the mail user when a fresh machine lacks them.

The benchmark must run from a clean Debian machine with one command, so it installs what it needs
itself instead of documenting manual steps. It uses the test suite's peer helper (``tests/peers/
programs.py``): each program it runs is looked for, its package installed when it is missing, and a
program still missing afterwards stops the run with its name.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.peers import programs  # the checkout's root, put on the path just above

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOVECOT = "/usr/sbin/dovecot"


def ensure_packages(need_dovecot: bool) -> None:
    """smtp-source (Postfix), and Dovecot's master and LMTP service when ``need_dovecot``."""
    wanted = [programs.Program(SMTP_SOURCE, "postfix", programs.POSTFIX_PRESEED)]
    if need_dovecot:
        wanted += [programs.Program(DOVECOT, "dovecot-core"), programs.DOVECOT_LMTP]
    try:
        programs.require_all(*wanted)
    except programs.MissingProgram as missing:
        raise SystemExit(str(missing)) from None


def ensure_user(name: str = "vmail") -> tuple[int, int]:
    """A non-root system user for Dovecot's mail processes (they refuse uid 0)."""
    return programs.ensure_system_user(name)
