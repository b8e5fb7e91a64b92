"""Install the comparison programs and the mail user when a fresh machine lacks them.

The benchmark must run from a clean Debian machine with one command, so it
installs what it needs itself instead of documenting manual steps.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

SMTP_SOURCE = "/usr/sbin/smtp-source"
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"

# Postfix asks which kind of mail system to configure; "No configuration" leaves
# the packaged service unconfigured, which is what a test machine wants.
POSTFIX_PRESEED = "postfix postfix/main_mailer_type select No configuration\n"


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=POSTFIX_PRESEED, text=True, check=True)
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env, check=True, stdout=subprocess.DEVNULL)


def ensure_packages(need_dovecot: bool) -> None:
    """Install postfix (for smtp-source) and dovecot-lmtpd when they are missing."""
    missing: list[str] = []
    if not os.path.exists(SMTP_SOURCE):
        missing.append("postfix")
    if need_dovecot and not (os.path.exists(DOVECOT) and os.path.exists(DOVECOT_LMTP)):
        missing += ["dovecot-core", "dovecot-lmtpd"]
    if missing:
        if os.geteuid() != 0:
            raise SystemExit(f"missing {', '.join(missing)} and not root to install them")
        _apt_install(missing)


def ensure_user(name: str = "vmail") -> tuple[int, int]:
    """Create a non-root system user for Dovecot's mail processes (they refuse uid 0)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        # Exit 9: another process created it meanwhile (tests run side by side).
        if proc.returncode not in (0, 9):
            raise SystemExit(f"useradd {name} failed: {proc.stderr.strip()}") from None
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid
