"""A private OpenLDAP slapd on loopback: its own cn=config, mdb database, port and PID file.

The Debian package asks debconf questions; ``slapd/no_configuration`` leaves the packaged service
unconfigured. The directory holds ``dc=example,dc=test`` with ``cn=admin`` as rootdn; entries are
added over LDAP by the test. ``stop()`` ends the server by its PID file, ``start()`` brings the same
database back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

from tests.peers import programs
from tests.peers.dovecot import free_port
from tests.peers.private import private_server

SLAPD = programs.Program("slapd", "slapd", "slapd slapd/no_configuration boolean true\n")
SLAPADD = programs.Program("slapadd", "slapd", "slapd slapd/no_configuration boolean true\n")
SUFFIX = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "ldap-admin-s3cret"
START_TIMEOUT = 15.0


def _config_ldif(directory: Path) -> str:
    schemas = "".join(
        f"include: file:///etc/ldap/schema/{name}.ldif\n\n" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {directory}/slapd.pid

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {directory}/db
olcSuffix: {SUFFIX}
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PASSWORD}
olcAccess: {{0}}to * by * read
"""


class Slapd:
    def __init__(self, directory: Path) -> None:
        self.slapd = programs.require(SLAPD)
        self.slapadd = programs.require(SLAPADD)
        self.directory = directory
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"

    def init(self) -> None:
        (self.directory / "config").mkdir(parents=True)
        (self.directory / "db").mkdir()
        ldif = self.directory / "config.ldif"
        ldif.write_text(_config_ldif(self.directory))
        subprocess.run(
            [self.slapadd, "-n", "0", "-F", str(self.directory / "config"), "-l", str(ldif)],
            check=True,
            capture_output=True,
        )
        self.start()
        import ldap3

        with ldap3.Connection(ldap3.Server(self.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True) as admin:
            admin.add(SUFFIX, ["dcObject", "organization"], {"o": "example", "dc": "example"})
            admin.add(f"ou=people,{SUFFIX}", ["organizationalUnit"], {"ou": "people"})

    def add_user(self, uid: str, attributes: dict[str, object], classes: tuple[str, ...] = ("inetOrgPerson",)) -> None:
        import ldap3

        with ldap3.Connection(ldap3.Server(self.url), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True) as admin:
            dn = f"uid={ldap3.utils.dn.escape_rdn(uid)},ou=people,{SUFFIX}"
            ok = admin.add(dn, list(classes), {"uid": uid, "cn": uid, "sn": uid, **attributes})
            assert ok, admin.result

    def start(self) -> None:
        with (self.directory / "start.log").open("wb") as log:
            subprocess.run(
                [self.slapd, "-h", f"{self.url}/", "-F", str(self.directory / "config")],
                stdout=log,
                stderr=log,
                check=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"slapd not listening: {(self.directory / 'start.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        pid_file = self.directory / "slapd.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        pid_file.unlink(missing_ok=True)


def slapd_server() -> AbstractContextManager[Slapd]:
    return private_server(Slapd, "mda-slapd-")
