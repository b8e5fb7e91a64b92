"""A private Dovecot instance on loopback, to check that what mda writes is what an IMAP/POP3 server reads.

It never touches the packaged service: its own ``base_dir``, ``state_dir``, log, free ports, and a
``passwd-file`` for both passdb and userdb, so each user can have its own ``mail`` location (Maildir or
mbox). Dovecot's mail processes refuse uid 0, so mail is served as a system user (``vmail``, created
when missing), and the whole tree is traversable by it (``mkdtemp`` makes 0700 directories).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers import programs
from tests.peers.programs import DOVEADM, DOVECOT, DOVECOT_IMAP, DOVECOT_MANAGESIEVE, DOVECOT_POP3

MAIL_USER = "vmail"
PASSWORD = "secret"
# Every program a private instance runs: the master, its IMAP and POP3 services, and doveadm.
DOVECOT_PROGRAMS = (DOVECOT, DOVECOT_IMAP, DOVECOT_POP3, DOVEADM)
START_TIMEOUT = 20.0


def ensure_system_user(name: str = MAIL_USER) -> tuple[int, int]:
    """(uid, gid) of the mail user Dovecot serves mail as (created when missing)."""
    return programs.ensure_system_user(name)


def free_port() -> int:
    """A TCP port free on loopback right now (bind to port 0 and read it back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class DovecotUser:
    """One login: ``name`` (``user@domain``), its home, and its Dovecot ``mail`` location."""

    name: str
    home: Path
    mail: str

    @classmethod
    def maildir(cls, name: str, home: Path) -> DovecotUser:
        return cls(name, home, f"maildir:{home}/Maildir")

    @classmethod
    def mbox(cls, name: str, home: Path) -> DovecotUser:
        """INBOX is the file ``HOME/mbox``; other folders would live under ``HOME/mail``."""
        return cls(name, home, f"mbox:{home}/mail:INBOX={home}/mbox")


@dataclass
class Dovecot:
    """A running private instance; ``stop()`` ends it (the fixture does so also when a test fails)."""

    directory: Path
    config: Path
    imap_port: int
    pop3_port: int
    uid: int
    gid: int
    users: list[DovecotUser] = field(default_factory=list)
    sieve_port: int | None = None
    """ManageSieve (RFC 5804) when started with ``managesieve=True``: scripts in ``~/sieve/``, the
    active one linked as ``~/.dovecot.sieve``, as Dovecot's Pigeonhole keeps them."""

    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        client.login(user, PASSWORD)
        return client

    def pop3(self, user: str) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.pop3_port, timeout=10)
        client.user(user)
        client.pass_(PASSWORD)
        return client

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [programs.require(DOVEADM), "-c", str(self.config), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"doveadm {args}: {result.stderr.strip()}\n{self.log()}")
        return result.stdout

    def quota(self, user: str) -> dict[str, tuple[int, int | None]]:
        """``doveadm quota get``: {type: (value, limit)}; STORAGE in kibibytes as Dovecot shows it."""
        rows = self.doveadm("-f", "tab", "quota", "get", "-u", user).splitlines()
        header = rows[0].split("\t")
        found: dict[str, tuple[int, int | None]] = {}
        for row in rows[1:]:
            values = dict(zip(header, row.split("\t"), strict=False))
            limit = values["Limit"]
            found[values["Type"]] = (int(values["Value"]), None if limit == "-" else int(limit))
        return found

    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(
            [programs.require(DOVECOT), "-c", str(self.config), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        pid_file = self.directory / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _managesieve_config(port: int) -> str:
    return f"""\
protocols = $protocols sieve
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
service managesieve-login {{
  inet_listener sieve {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def _config(directory: Path, users_file: Path, imap_port: int, pop3_port: int, uid: int, gid: int) -> str:
    return f"""\
base_dir = {directory}/run
state_dir = {directory}/state
instance_name = mda-test-{imap_port}
log_path = {directory}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mbox_write_locks = fcntl dotlock
mail_plugins = quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = maildir:User quota
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users_file}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


def start_dovecot(
    directory: Path, users: Sequence[DovecotUser], *, uid: int, gid: int, managesieve: bool = False
) -> Dovecot:
    """Write the configuration and users file under ``directory``, start Dovecot, wait for IMAP (and
    ManageSieve, with ``managesieve``)."""
    users_file = directory / "users"
    users_file.write_text(
        "".join(f"{u.name}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{u.home}::userdb_mail={u.mail}\n" for u in users)
    )
    imap_port, pop3_port = free_port(), free_port()
    config = directory / "dovecot.conf"
    text = _config(directory, users_file, imap_port, pop3_port, uid, gid)
    sieve_port = None
    if managesieve:
        programs.require(DOVECOT_MANAGESIEVE)
        sieve_port = free_port()
        text += _managesieve_config(sieve_port)
    config.write_text(text)
    for sub in ("run", "state"):
        (directory / sub).mkdir(exist_ok=True)
    instance = Dovecot(directory, config, imap_port, pop3_port, uid, gid, list(users), sieve_port)
    # The daemon inherits our descriptors: a pipe here would keep run() waiting for ever.
    with (directory / "start.log").open("wb") as start_log:
        result = subprocess.run(
            [programs.require(DOVECOT), "-c", str(config)], stdout=start_log, stderr=start_log, check=False
        )
    if result.returncode != 0:
        start_output = (directory / "start.log").read_text(errors="replace")
        raise AssertionError(f"dovecot did not start: {start_output}\n{instance.log()}")
    deadline = time.monotonic() + START_TIMEOUT
    for port in (imap_port,) if sieve_port is None else (imap_port, sieve_port):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    instance.stop()
                    raise AssertionError(f"dovecot not listening on {port}\n{instance.log()}") from None
                time.sleep(0.05)
    return instance


@dataclass
class DovecotSetup:
    """Where a test puts mail before starting Dovecot: ``mail_root`` is traversable by the mail user."""

    directory: Path
    mail_root: Path
    owner: tuple[int, int]
    start: Callable[..., Dovecot]
    """``start(users, managesieve=False)``."""


@pytest.fixture
def dovecot_factory() -> Iterator[DovecotSetup]:
    """Private Dovecot: deliver into ``setup.mail_root`` (owned by ``setup.owner``), then ``start(users)``.

    Every instance started is stopped and its directory removed at the end, also when the test fails.
    """
    programs.require_all(*DOVECOT_PROGRAMS)
    uid, gid = ensure_system_user()
    directory = Path(tempfile.mkdtemp(prefix="mda-dovecot-"))
    directory.chmod(0o755)
    mail_root = directory / "mail"
    mail_root.mkdir(mode=0o755)
    os.chown(mail_root, uid, gid)
    started: list[Dovecot] = []

    def start(users: Sequence[DovecotUser], *, managesieve: bool = False) -> Dovecot:
        instance = start_dovecot(directory, users, uid=uid, gid=gid, managesieve=managesieve)
        started.append(instance)
        return instance

    try:
        yield DovecotSetup(directory, mail_root, (uid, gid), start)
    finally:
        for instance in started:
            instance.stop()
        shutil.rmtree(directory, ignore_errors=True)
