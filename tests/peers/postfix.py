"""A private Postfix instance on loopback, in front of mda, as operators run it.

Never the packaged service: its own ``config_directory``, ``queue_directory`` and ``data_directory``
under a temporary folder, its own ``master.cf`` with ``chroot = n`` on every service (a chrooted lmtp
client cannot see a UNIX socket outside the queue directory), smtpd on a free loopback port, no DNS and
no outside delivery (``default_transport = error``), and short retry timers so deferred mail is retried
within seconds. Postfix logs to ``DIR/maillog`` through its ``postlog`` service; tests read delivery
outcomes (``dsn=5.1.1, status=bounced``) there. Two traps are handled here:
``main.cf``'s mtime is set back (Postfix re-reads a config changed within the last second in a loop),
and the daemon's output never goes to a pipe the test waits on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers import programs
from tests.peers.dovecot import free_port
from tests.peers.programs import POSTFIX, POSTQUEUE, SENDMAIL, SYSTEM_PYTHON
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib" / "postfix"
START_TIMEOUT = 30.0

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{smtpd_address} inet n - n - - smtpd
pickup    unix  n       -       n       1       1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       1       1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def read_snippet(path: Path) -> dict[str, str]:
    """``name = value`` settings of a main.cf snippet from contrib/postfix (comments and blanks skipped).

    Continuation lines (starting with white space) are joined, as Postfix reads main.cf.
    """
    settings: dict[str, str] = {}
    name = ""
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] in (" ", "\t") and name:
            settings[name] += " " + line.strip()
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        settings[name] = value.strip()
    return settings


def base_settings(directory: Path, smtpd_port: int) -> dict[str, str]:
    """What every private instance needs: its own directories, loopback only, no DNS, fast retries."""
    return {
        "compatibility_level": "3.6",
        "queue_directory": str(directory / "queue"),
        "data_directory": str(directory / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "relay.example.test",
        "mydomain": "example.test",
        "myorigin": "example.test",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "relayhost": "",
        "default_transport": "error:outside delivery disabled in tests",
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "lmtp_host_lookup": "native",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "recipient_delimiter": "+",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination",
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "lmtp_connect_timeout": "5s",
        "smtp_connect_timeout": "5s",
        "bounce_queue_lifetime": "0",
        "maillog_file": str(directory / "maillog"),
        "maillog_file_prefixes": str(directory),
        "notify_classes": "",
        "smtpd_banner": "$myhostname ESMTP",
        "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C",
    }


@dataclass
class Postfix:
    """A running private instance; ``stop()`` ends it (the fixture does so also when a test fails)."""

    directory: Path
    smtpd_port: int
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.directory / "etc"

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [programs.require(POSTFIX), "-c", str(self.config_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def sendmail(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit through ``sendmail -C DIR`` (postdrop into this instance's maildrop queue)."""
        result = subprocess.run(
            [programs.require(SENDMAIL), "-C", str(self.config_dir), "-i", "-f", sender, "--", *recipients],
            input=message,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"sendmail: {result.stderr.decode(errors='replace')}\n{self.log()}")

    def submit(self, sender: str, recipients: list[str], message: bytes) -> dict[str, tuple[int, bytes]]:
        """Submit over SMTP to this instance's smtpd; returns the refused recipients (none expected)."""
        with smtplib.SMTP("127.0.0.1", self.smtpd_port, timeout=30) as client:
            return client.sendmail(sender, recipients, message)

    def log(self) -> str:
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def delivery_lines(self, recipient: str) -> list[str]:
        """Log lines of delivery attempts to ``recipient`` (``to=<...>, ..., dsn=..., status=...``)."""
        marker = f"to=<{recipient}>"
        return [line for line in self.log().splitlines() if marker in line and " status=" in line]

    def wait_for_status(self, recipient: str, status: str, timeout: float = 30.0, count: int = 1) -> str:
        """The ``count``-th delivery line for ``recipient`` with ``status=STATUS``; fails after ``timeout``."""

        def found() -> list[str]:
            lines = [line for line in self.delivery_lines(recipient) if f" status={status}" in line]
            return lines if len(lines) >= count else []

        lines = wait_for(found, timeout, 0.1, what=f"status={status} for {recipient}", describe=self.log)
        return lines[count - 1]

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now (``postqueue -f``)."""
        subprocess.run(
            [programs.require(POSTQUEUE), "-c", str(self.config_dir), "-f"],
            capture_output=True,
            timeout=30,
            check=False,
        )

    def stop(self) -> None:
        self.postfix("stop", check=False)
        pid_file = self.directory / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), 0)
                time.sleep(0.05)
                continue
            break


def write_main_cf(config_dir: Path, settings: Mapping[str, str]) -> None:
    """Write main.cf and set its mtime back: a fresh main.cf makes every Postfix command re-read it."""
    path = config_dir / "main.cf"
    path.write_text("".join(f"{name} = {value}\n" for name, value in settings.items()))
    past = time.time() - 10
    os.utime(path, (past, past))


def start_postfix(directory: Path, settings: Mapping[str, str]) -> Postfix:
    """Write main.cf (``base_settings`` overridden by ``settings``) and master.cf, start, wait for smtpd."""
    smtpd_port = free_port()
    config_dir = directory / "etc"
    config_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("queue", "data"):
        (directory / sub).mkdir(exist_ok=True)
    shutil.chown(directory / "data", "postfix")
    merged = {**base_settings(directory, smtpd_port), **settings}
    (config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_address=f"127.0.0.1:{smtpd_port}"))
    write_main_cf(config_dir, merged)
    instance = Postfix(directory, smtpd_port, merged)
    result = instance.postfix("start", check=False)
    if result.returncode != 0:
        raise AssertionError(f"postfix start: {result.stdout}{result.stderr}\n{instance.log()}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError, smtplib.SMTPException), smtplib.SMTP("127.0.0.1", smtpd_port, timeout=2):
            return instance
        if time.monotonic() > deadline:
            instance.stop()
            raise AssertionError(f"postfix smtpd not answering on {smtpd_port}\n{instance.log()}")
        time.sleep(0.1)


def user_python(directory: Path, user: str) -> tuple[str, dict[str, str]]:
    """An interpreter and environment with which ``user`` (not root) can run ``python -m mda``.

    Postfix runs ``mailbox_command`` as the recipient's uid, and the test runner's interpreter may live
    where that user cannot reach (e.g. under /root). The mda package is copied to a readable place;
    the interpreter is the runner's own when the user can start it, else Debian's python3 with PyYAML
    (LDA mode needs nothing else outside the standard library).
    """
    target = directory / "pylib"
    if not (target / "mda").exists():
        shutil.copytree(REPO / "mda", target / "mda", ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"PYTHONPATH": str(target), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "env", f"PYTHONPATH={target}", sys.executable, "-c", "import mda.lda"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode == 0:
        return sys.executable, env
    return system_python_with_yaml(), env


def system_python_with_yaml() -> str:
    """Debian's python3 able to ``import yaml`` (package python3-yaml installed when it cannot)."""
    python = programs.require(SYSTEM_PYTHON)
    programs.require_that(
        f"{python}'s yaml module",
        "python3-yaml",
        lambda: subprocess.run([python, "-c", "import yaml"], capture_output=True, check=False).returncode == 0,
    )
    return python


def ensure_postfix() -> None:
    """Every Postfix program the tests run; the package is installed (its debconf question answered)
    when one is missing."""
    programs.require_all(POSTFIX, POSTQUEUE, SENDMAIL)


def queue_is_empty(instance: Postfix) -> bool:
    result = subprocess.run(
        [programs.require(POSTQUEUE), "-c", str(instance.config_dir), "-p"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return bool(re.search(r"Mail queue is empty", result.stdout))


@pytest.fixture
def postfix_factory() -> Iterator[tuple[Path, list[Postfix]]]:
    """A traversable directory for private instances; every instance started in it is stopped at the end."""
    ensure_postfix()
    directory = Path(tempfile.mkdtemp(prefix="mda-postfix-"))
    directory.chmod(0o755)
    started: list[Postfix] = []
    try:
        yield directory, started
    finally:
        for instance in started:
            instance.stop()
        shutil.rmtree(directory, ignore_errors=True)
