"""SQL sources: SQLite (standard library), PostgreSQL (psycopg 3, ``mda[postgresql]``) and MySQL/MariaDB
(PyMySQL, ``mda[mysql]``).

Queries name ``:address``, ``:local``, ``:domain`` and ``:detail``; the values are always bound as
parameters by the database client, never formatted into the text, so no address can change a query.
``user_query`` returns at most one row whose column names are user fields (``path``, ``quota``,
``home``, ``mail``, …; see README "User databases"); ``alias_query`` returns Postfixadmin's ``goto``
(the first column of each row: comma-separated addresses).
"""

from __future__ import annotations

import abc
import contextlib
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from contextlib import closing
from typing import Any

from mda.userdb.record import GarbageRow, LookupKey, Record, UserdbError, record_from_row, split_goto
from mda.userdb.settings import SourceSettings, query_placeholders, read_password_file

Rows = tuple[list[str], list[tuple[Any, ...]]]


class MissingDriver(Exception):
    """The client library a configured source needs is not installed (a configuration error)."""


class SqlSource:
    driver = "sql"

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.label = settings.label
        password = read_password_file(settings.password_file, f"userdb {self.label}")
        self._secret = password or urllib.parse.urlsplit(settings.url).password or ""
        scheme = settings.url.partition("://")[0]
        self._backend: _Backend
        if scheme == "sqlite":
            self._backend = _Sqlite(settings)
        elif scheme in ("mysql", "mariadb"):
            self._backend = _mysql(settings, password)
        else:
            self._backend = postgres_pool(
                settings.url,
                password,
                settings.timeout,
                settings.pool_size,
                f"userdb item {settings.index + 1}: driver sql",
            )

    def lookup(self, key: LookupKey) -> Record | None:
        parameters = key.parameters()
        try:
            aliases: tuple[str, ...] | None = None
            if self.settings.alias_query:
                _, rows = self._backend.run(self.settings.alias_query, parameters)
                if rows:
                    aliases = split_goto([row[0] for row in rows])
            user: dict[str, Any] | None = None
            if self.settings.user_query and (aliases is None or _names_itself(aliases, key)):
                names, rows = self._backend.run(self.settings.user_query, parameters)
                if len(rows) > 1:
                    raise GarbageRow(f"user_query returned {len(rows)} rows for one address")
                if rows:
                    user = dict(zip(names, rows[0], strict=True))
        except UserdbError:
            raise
        except Exception as error:  # every client error means "could not answer", never "no user"
            raise UserdbError(self._scrub(f"{type(error).__name__}: {error}".strip())) from None
        if user is None and aliases is None:
            return None
        if user is None:
            return Record(source=self.label, aliases=aliases, shown=f"goto={','.join(aliases or ())}")
        record = record_from_row(self.label, user, path_base=self.settings.path_base, aliases=aliases)
        if aliases is not None:
            return Record(record.source, record.user, aliases, f"goto={','.join(aliases)} {record.shown}")
        return record

    def check(self) -> str:
        try:
            self._backend.run("SELECT 1", {})
        except Exception as error:
            raise UserdbError(self._scrub(f"{type(error).__name__}: {error}")) from None
        return "connected"

    def close(self) -> None:
        self._backend.close()

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secret)


def scrub(text: str, secret: str) -> str:
    """A client's error message on one line, without the password it may quote."""
    text = " ".join(text.split())
    return text.replace(secret, "***") if secret else text


def _names_itself(aliases: tuple[str, ...], key: LookupKey) -> bool:
    return any(target.lower() == key.address.lower() for target in aliases)


class _Backend(abc.ABC):
    @abc.abstractmethod
    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        """The column names and rows of ``query`` with its ``:name`` placeholders bound to ``parameters``."""

    def close(self) -> None:  # noqa: B027  (optional: only backends holding connections override it)
        """Nothing to release by default; a pool closes its connections."""


class _Sqlite(_Backend):
    """One read-only connection per thread (sqlite3 connections stay in their thread)."""

    def __init__(self, settings: SourceSettings) -> None:
        self._path = "/" + settings.url[len("sqlite:///") :].lstrip("/")  # a file URL: always absolute
        self._timeout = settings.timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            uri = f"file:{urllib.parse.quote(self._path)}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, timeout=self._timeout, check_same_thread=False)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        used = {name: parameters[name] for name in query_placeholders(query)}
        try:
            with closing(self._connection().execute(query, used)) as cursor:
                names = [column[0].lower() for column in cursor.description or ()]
                return names, cursor.fetchall()
        except sqlite3.Error:
            self._local.connection = None  # a broken or locked file: open afresh next time
            raise

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![:\w]):([A-Za-z_]\w*)")


def to_pyformat(query: str) -> str:
    """``:name`` placeholders as psycopg's ``%(name)s``, every literal ``%`` doubled."""
    escaped = query.replace("%", "%%")
    return _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s" if m.group(1) else m.group(0), escaped)


class _Pool(_Backend):
    """Up to ``pool_size`` client connections (PostgreSQL, MySQL), kept open between look-ups.

    A connection is opened in the calling thread when none is idle, so a server that is down fails the
    look-up at once with the client's reason ("Connection refused"), not after a wait for a background
    connector. An idle connection that fails (the server restarted since) is dropped and the query
    retried once on a new one: a restarted server is used again without restarting mda. A connection
    that raised anything is never reused. A closed pool still answers a late caller (a transaction that
    took a configuration a reload has replaced), on a connection it closes afterwards.
    """

    def __init__(
        self, timeout: float, pool_size: int, connect: Callable[[], Any], stale: tuple[type[Exception], ...]
    ) -> None:
        self._connect = connect
        self._stale = stale
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._queries: dict[str, str] = {}
        self._closed = False

    def run(self, query: str, parameters: Mapping[str, Any]) -> Rows:
        text = self._queries.get(query)
        if text is None:
            text = self._queries[query] = to_pyformat(query)
        used = {name: parameters[name] for name in query_placeholders(query)}
        if not self._slots.acquire(timeout=self._timeout):
            raise UserdbError(f"all connections busy for {self._timeout:g}s")
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is not None:
                # A stale connection (the server restarted) is dropped by _execute: then once more, afresh.
                with contextlib.suppress(*self._stale):
                    return self._execute(connection, text, used)
            return self._execute(self._connect(), text, used)
        finally:
            self._slots.release()

    def _execute(self, connection: Any, text: str, used: dict[str, Any]) -> Rows:
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(text, used)
                names = [str(column[0]).lower() for column in cursor.description or ()]
                rows = [tuple(row) for row in cursor.fetchall()] if cursor.description is not None else []
            finally:
                cursor.close()
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return names, rows
        with contextlib.suppress(Exception):
            connection.close()
        return names, rows

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.close()


def postgres_pool(url: str, password: str | None, timeout: float, pool_size: int, where: str) -> _Pool:
    """A pool of autocommit psycopg connections: each statement is its own transaction, bounded by
    ``timeout`` (connect and ``statement_timeout``). Used by the sql userdb source and by ``state:``;
    ``where`` names the configuration key in the error when psycopg is missing."""
    try:
        import psycopg
    except ImportError:
        raise MissingDriver(f"{where} with a postgresql url needs psycopg: pip install 'mda[postgresql]'") from None
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": max(1, int(timeout)),
        "options": f"-c statement_timeout={int(timeout * 1000)}",
        "application_name": "mda",
    }
    if password is not None:
        kwargs["password"] = password
    return _Pool(timeout, pool_size, lambda: psycopg.connect(url, **kwargs), (psycopg.OperationalError,))


def _mysql(settings: SourceSettings, password: str | None) -> _Pool:
    """MySQL/MariaDB through PyMySQL: ``mysql://user@host:port/database`` (``?unix_socket=/path``)."""
    try:
        import pymysql  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDriver(
            f"userdb item {settings.index + 1}: driver sql with a mysql url needs PyMySQL: pip install 'mda[mysql]'"
        ) from None
    url = urllib.parse.urlsplit(settings.url)
    query = urllib.parse.parse_qs(url.query)
    kwargs: dict[str, Any] = {
        "host": url.hostname or "localhost",
        "port": url.port or 3306,
        "user": urllib.parse.unquote(url.username or ""),
        "password": password if password is not None else urllib.parse.unquote(url.password or ""),
        "database": url.path.lstrip("/") or None,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": settings.timeout,
        "read_timeout": settings.timeout,
        "write_timeout": settings.timeout,
    }
    if "unix_socket" in query:
        kwargs["unix_socket"] = query["unix_socket"][0]
    stale = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
    return _Pool(settings.timeout, settings.pool_size, lambda: pymysql.connect(**kwargs), stale)


__all__ = ["MissingDriver", "SqlSource", "postgres_pool", "scrub", "to_pyformat"]
