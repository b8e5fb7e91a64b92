"""A private PostgreSQL server on loopback: its own data directory, port and socket directory.

``initdb`` and ``postgres`` refuse root, so they run as the ``postgres`` user (created by the Debian
package) on a directory it owns. ``kill()`` stops it the way a crash would (``pg_ctl -m immediate``),
``start()`` brings the same cluster back, ``pause()``/``resume()`` stall every server process
(SIGSTOP/SIGCONT): connections stay open and nothing answers.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from tests.peers import programs
from tests.peers.dovecot import free_port
from tests.peers.private import private_server

PASSWORD = "pg-s3cret-password"


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    def __init__(self, directory: Path) -> None:
        programs.require_that("/usr/lib/postgresql/*/bin/pg_ctl", "postgresql", lambda: _bin_dir() is not None)
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self.bin = Path(bin_dir)
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.port = free_port()
        self.url = f"postgresql://mda@127.0.0.1:{self.port}/mail"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, check=check, cwd="/"
        )

    def init(self) -> None:
        for path in (self.directory, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        self.directory.chmod(0o755)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self.start()
        self.sql(f"CREATE ROLE mda LOGIN PASSWORD '{PASSWORD}'", database="postgres")
        self.sql("CREATE DATABASE mail OWNER mda", database="postgres")  # not inside a transaction block
        with open(self.data / "pg_hba.conf", "w") as hba:
            hba.write("local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n")
            hba.write("host all mda 127.0.0.1/32 scram-sha-256\n")  # mda logs in with its password
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def kill(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def _pids(self) -> list[int]:
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [master, *map(int, children)]

    def pause(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def sql(self, statements: str, database: str = "mail") -> str:
        psql = str(self.bin / "psql") if (self.bin / "psql").exists() else "psql"
        result = self._as_postgres(
            psql,
            "-h",
            str(self.sockets),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            statements,
        )
        return result.stdout

    def stop(self) -> None:
        with suppress(OSError, ValueError):
            self.resume()
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop", check=False)


def postgres_server() -> AbstractContextManager[PostgresServer]:
    """A fresh cluster with role ``mda`` (password ``PASSWORD``) owning database ``mail``."""
    return private_server(PostgresServer, "mda-pg-")
