"""The databases behind duplicate suppression and vacation records (``state:``, README "Shared state").

Both kinds of record are written with the same SQL on either backend, each statement its own atomic
transaction (``INSERT … ON CONFLICT … RETURNING``), so two deliveries that race for one record learn
which of them won without a lock held across the delivery:

- :class:`SqliteFile`: a SQLite file in ``state_dir``, for one host. SQLite's locks rely on POSIX
  advisory locks, which NFS implements poorly or not at all, so a file on a shared NFS volume can be
  corrupted or lose its updates when instances on several hosts write it.
- :class:`Postgres`: one PostgreSQL database that several instances share, through the connection pool
  of the ``userdb`` sql driver (timeouts, password file, the missing-psycopg error).

A caller names the tables it needs with :meth:`Database.prepare` (``CREATE … IF NOT EXISTS``, run once per
database object), so operators may also create them beforehand.
"""

from __future__ import annotations

import abc
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mda.statestore.settings import StateSettings
from mda.userdb.settings import read_password_file
from mda.userdb.sql import MissingDriver, postgres_pool, scrub

Rows = tuple[list[str], list[tuple[Any, ...]]]
SQLITE_BUSY_TIMEOUT = 10.0


class StateError(Exception):
    """The record store could not answer (server down, file unwritable, timeout)."""


class Database(abc.ABC):
    """Runs one statement at a time with ``:name`` parameters; each statement commits on its own."""

    label = ""

    def __init__(self) -> None:
        self._prepared: set[tuple[str, ...]] = set()
        self._prepare_lock = threading.Lock()

    @abc.abstractmethod
    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        """The column names and rows of one statement, committed on its own."""

    def prepare(self, schema: Sequence[str]) -> None:
        """Run ``schema`` (idempotent ``CREATE … IF NOT EXISTS`` statements) once for this database."""
        key = tuple(schema)
        if key in self._prepared:
            return
        with self._prepare_lock:
            if key in self._prepared:
                return
            for statement in schema:
                try:
                    self.run(statement, {})
                except StateError:
                    # Two instances creating the same table at once: PostgreSQL may fail one of them
                    # (a unique violation in its catalog) although the table now exists. Once more.
                    self.run(statement, {})
            self._prepared.add(key)

    def close(self) -> None:  # noqa: B027  (optional: only backends holding connections override it)
        """Nothing to release by default (a file per call); a pool closes its connections."""


class SqliteFile(Database):
    """A SQLite file, opened per statement (cheap, fork-safe, and never held across a delivery).

    ``read_only`` (``mda resolve --message``) opens an existing file with SQLite's ``mode=ro`` and
    creates nothing; writes then fail.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        super().__init__()
        self.path = path
        self.read_only = read_only
        self.label = f"sqlite {path}"

    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        try:
            if self.read_only:
                uri = f"{self.path.absolute().as_uri()}?mode=ro"
                db = sqlite3.connect(uri, timeout=SQLITE_BUSY_TIMEOUT, uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                db = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
            try:
                if not self.read_only:
                    db.execute("PRAGMA journal_mode=WAL")
                cursor = db.execute(query, dict(parameters))
                names = [str(column[0]).lower() for column in cursor.description or ()]
                rows = cursor.fetchall()
                cursor.close()
                return names, rows
            finally:
                db.close()
        except (OSError, sqlite3.Error) as error:
            raise StateError(f"{self.label}: {type(error).__name__}: {error}") from None

    def prepare(self, schema: Sequence[str]) -> None:
        if not self.read_only:
            super().prepare(schema)


class Postgres(Database):
    """The shared database: a small pool of autocommit connections, opened on first use."""

    def __init__(self, settings: StateSettings) -> None:
        super().__init__()
        self.settings = settings
        self.label = settings.label
        password = read_password_file(settings.password_file, settings.label)
        self._secret = password or urlsplit(settings.url).password or ""
        self._pool = postgres_pool(settings.url, password, settings.timeout, settings.pool_size, "state")

    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        try:
            return self._pool.run(query, parameters)
        except Exception as error:  # every client failure is "could not answer"
            raise StateError(scrub(f"{self.label}: {type(error).__name__}: {error}", self._secret)) from None

    def close(self) -> None:
        self._pool.close()


_shared: dict[tuple[int, int], Postgres] = {}
"""The pool of each ``state:`` setting in use, by process and setting *object*: every configuration load
(start, reload) has its own, so a reload connects anew with what it read (the password file included)."""
_shared_lock = threading.Lock()


def open_database(settings: StateSettings, directory: Path, file_name: str, *, read_only: bool = False) -> Database:
    """The database for one kind of record: ``file_name`` in ``directory`` (SQLite), or the PostgreSQL
    pool of this process for this configuration (a forked worker opens its own), until
    :func:`close_databases`. Raises StateError when the password file cannot be read or psycopg is
    missing."""
    if not settings.shared:
        return SqliteFile(directory / file_name, read_only=read_only)
    key = (os.getpid(), id(settings))
    with _shared_lock:
        database = _shared.get(key)
        if database is None:
            try:
                database = _shared[key] = Postgres(settings)
            except OSError as error:  # the password file, named in the message
                raise StateError(error.strerror or str(error)) from None
            except MissingDriver as error:
                raise StateError(str(error)) from None
            weakref.finalize(settings, _forget, key)  # the key stays unique while ``settings`` lives
        return database


def close_databases(settings: StateSettings) -> None:
    """Close the pool of a configuration a reload has replaced. A transaction that still holds that
    configuration gets the closed pool, which answers on a connection it does not keep."""
    with _shared_lock:
        database = _shared.get((os.getpid(), id(settings)))
    if database is not None:
        database.close()


def _forget(key: tuple[int, int]) -> None:
    """Drop the pool of a configuration that no longer exists (only in the process that opened it: a
    forked child's copy of a connection belongs to its parent)."""
    if key[0] != os.getpid():
        return
    with _shared_lock:
        database = _shared.pop(key, None)
    if database is not None:
        database.close()


def check(settings: StateSettings, directory: Path) -> tuple[str, str | None]:
    """``(label, problem or None)`` for ``mda check-config --connect``, creating nothing: PostgreSQL must
    answer ``SELECT 1`` on a connection of its own; for SQLite, every record file in ``directory`` must
    open (read-only) as a database, and ``directory``, or the nearest ancestor mda would create it in,
    must be a writable directory."""
    if settings.shared:
        try:
            database = Postgres(settings)
        except (OSError, MissingDriver) as error:  # the password file (named), psycopg
            return settings.label, str(error.strerror if isinstance(error, OSError) else error)
        try:
            database.run("SELECT 1", {})
        except StateError as error:
            return settings.label, str(error).removeprefix(f"{settings.label}: ")
        finally:
            database.close()
        return settings.label, None
    label = f"sqlite {directory}"
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return label, f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return label, f"{existing} is not writable by uid {os.geteuid()}"
    for path in sorted(directory.glob("*.sqlite")) if existing == directory else []:
        try:
            SqliteFile(path, read_only=True).run("SELECT count(*) FROM sqlite_master", {})
        except StateError as error:
            return label, str(error).removeprefix(f"{label}/")
    return label, None


def owner_token() -> str:
    """``host:pid:start:random``: who holds a pending claim. :func:`owner_is_dead` reads the host, the
    pid and the process's start time (so a pid the kernel has since given to another process is not
    taken for the owner)."""
    return f"{_HOST}:{os.getpid()}:{_start_time(os.getpid())}:{os.urandom(6).hex()}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names a process of this host that no longer runs: gone, a zombie (a killed
    worker that nobody has reaped yet, e.g. under a container's PID 1 that reaps nothing), or a pid now
    used by a process that started at another time. Another host's process is never judged dead here
    (the lease covers it). Tokens without a start time (``host:pid:random``) are judged on the pid."""
    host, pid_text, *rest = [*owner.split(":"), ""]
    if host != _HOST or not pid_text.isdigit():
        return False
    status = _process_status(int(pid_text))
    if status is None:
        return True
    state, start = status
    if state in ("Z", "X"):
        return True
    return len(rest) == 3 and rest[0].isdigit() and rest[0] != start


def _process_status(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks)`` from ``/proc/PID/stat``, or None when no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ("?", "")  # exists, unreadable: judged alive
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[0], fields[19]


@functools.lru_cache(maxsize=4)
def _start_time(pid: int) -> str:
    """This process's start time, read once per pid (a forked worker has its own)."""
    status = _process_status(pid)
    return status[1] if status else "0"


_HOST = os.uname().nodename

__all__ = [
    "Database",
    "Postgres",
    "SqliteFile",
    "StateError",
    "StateSettings",
    "check",
    "close_databases",
    "open_database",
    "owner_is_dead",
    "owner_token",
]
