"""A private MariaDB server on loopback: its own data directory, port, socket and PID file.

Installed with ``mariadb-install-db``, run as the ``mysql`` user (``--user=mysql``), stopped with
SIGKILL when a test wants a crash (``kill()``) and started again on the same data (``start()``).
root reaches it through the UNIX socket (unix_socket authentication) to create the database and the
password user mda logs in as.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

from tests.peers import programs
from tests.peers.dovecot import free_port
from tests.peers.private import private_server

MARIADBD = programs.Program("mariadbd", "mariadb-server")
INSTALL_DB = programs.Program("mariadb-install-db", "mariadb-server")
CLIENT = programs.Program("mariadb", "mariadb-client")
PASSWORD = "maria-s3cret-password"
START_TIMEOUT = 30.0


class MariaDB:
    def __init__(self, directory: Path) -> None:
        self.mariadbd, self.install_db, self.client = programs.require_all(MARIADBD, INSTALL_DB, CLIENT)
        self.directory = directory
        self.data = directory / "data"
        self.socket = directory / "mysqld.sock"
        self.port = free_port()
        self.url = f"mysql://mda@127.0.0.1:{self.port}/mail"
        self.process: subprocess.Popen[bytes] | None = None

    def init(self) -> None:
        shutil.chown(self.directory, "mysql", "mysql")
        self.directory.chmod(0o755)
        subprocess.run(
            [self.install_db, f"--datadir={self.data}", "--user=mysql", "--skip-test-db"],
            check=True,
            capture_output=True,
        )
        self.start()
        self.sql(
            f"CREATE DATABASE mail CHARACTER SET utf8mb4; CREATE USER 'mda'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            " GRANT SELECT ON mail.* TO 'mda'@'127.0.0.1';"  # mda reads, never writes
        )

    def start(self) -> None:
        with (self.directory / "stdout.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.mariadbd,
                    f"--datadir={self.data}",
                    f"--socket={self.socket}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    "--user=mysql",
                    f"--pid-file={self.directory}/mariadb.pid",
                    f"--log-error={self.directory}/error.log",
                    "--skip-name-resolve",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    error_log = self.directory / "error.log"
                    raise AssertionError(f"mariadbd not listening: {error_log.read_text(errors='replace')}") from None
                time.sleep(0.1)

    def sql(self, statements: str) -> str:
        result = subprocess.run(
            [self.client, "-S", str(self.socket), "-N", "-e", statements], capture_output=True, text=True, check=True
        )
        return result.stdout

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


def mariadb_server() -> AbstractContextManager[MariaDB]:
    return private_server(MariaDB, "mda-mariadb-")
