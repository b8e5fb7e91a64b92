"""User databases: the ``userdb:`` sources, consulted in order behind one cache.

``Userdb.lookup`` answers a ``Record`` (a user, an alias, or both), ``None`` (no such address in any
source), or raises ``UserdbError`` when a source could not answer: the policy turns that into
``451 4.3.0`` for that recipient only, never into "unknown user". A later source is never asked when
an earlier one fails, since it might answer differently from the one that is down.

Look-ups block (sockets, files), so they never run on the event loop: ``State.resolve_now`` tries the
policy with ``cached_only()`` (cache hits are answered on the loop, as the RCPT is read), and on
``NotCached`` ``State.resolve_async`` runs the policy in this module's ``resolver`` threads. Each
source call runs in a second pool with its own deadline (``timeout``), so a stalled server costs its
timeout and a 451, never a hung session.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Protocol

from mda import logs
from mda.userdb.cache import TtlCache
from mda.userdb.record import LookupKey, Record, UserdbError
from mda.userdb.settings import SourceSettings, UserdbSettings, query_placeholders

__all__ = ["LookupKey", "NotCached", "Record", "Userdb", "UserdbError"]

RESOLVER_THREADS = 8
"""Policy resolutions waiting on a source at once (each holds one thread while it waits)."""


class NotCached(Exception):
    """Raised inside ``cached_only()`` when an answer would need a source: resolve off the loop."""


class Source(Protocol):
    driver: str
    label: str
    settings: SourceSettings

    def lookup(self, key: LookupKey) -> Record | None: ...

    def check(self) -> str: ...

    def close(self) -> None: ...


class Observer(Protocol):
    """Where look-ups are counted (``mda.metrics.Metrics``)."""

    def userdb_lookup(self, driver: str, result: str, seconds: float) -> None: ...

    def userdb_cache_result(self, result: str) -> None: ...


_cached_only: contextvars.ContextVar[bool] = contextvars.ContextVar("userdb_cached_only", default=False)
_expiries: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("userdb_expiries", default=None)


def build_source(settings: SourceSettings) -> Source:
    if settings.driver == "passwd-file":
        from mda.userdb.passwdfile import PasswdFileSource

        return PasswdFileSource(settings)
    if settings.driver == "dovecot":
        from mda.userdb.dovecot import DovecotSource

        return DovecotSource(settings)
    if settings.driver == "ldap":
        from mda.userdb.ldap import LdapSource

        return LdapSource(settings)
    from mda.userdb.sql import SqlSource

    return SqlSource(settings)


class Userdb:
    def __init__(self, settings: UserdbSettings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.sources: list[Source] = []
        try:
            for source in settings.sources:
                self.sources.append(build_source(source))
        except BaseException:
            self.close()
            raise
        self._uses_detail = any(
            "detail" in query_placeholders(query)
            for source in settings.sources
            for query in (source.user_query, source.alias_query)
        )
        """Only then do ``alice+a@`` and ``alice+b@`` need look-ups (and cache entries) of their own."""
        self.cache: TtlCache[Record] = TtlCache(settings.cache.ttl, settings.cache.negative_ttl, settings.cache.size)
        workers = sum(max(source.pool_size, 1) for source in settings.sources) + 2
        self._calls = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="userdb-source")
        self.resolver = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="userdb")

    @staticmethod
    @contextlib.contextmanager
    def cached_only() -> Iterator[None]:
        """Within this block a look-up that would ask a source raises ``NotCached`` instead."""
        token = _cached_only.set(True)
        try:
            yield
        finally:
            _cached_only.reset(token)

    @staticmethod
    @contextlib.contextmanager
    def answers_used() -> Iterator[list[float]]:
        """Collects when each answer used within this block stops being valid (``time.monotonic``): a
        result built from them may be reused until the earliest, never longer than the cache allows."""
        expiries: list[float] = []
        token = _expiries.set(expiries)
        try:
            yield expiries
        finally:
            _expiries.reset(token)

    def reused(self, answers: int) -> None:
        """A result built from ``answers`` cached answers was reused: count them as cache hits."""
        if self.observer is not None:
            for _ in range(answers):
                self.observer.userdb_cache_result("hit")

    def lookup(self, key: LookupKey) -> Record | None:
        if not self._uses_detail:
            key = LookupKey(key.local, key.domain)
        cache_key = f"{key.address}\0{key.detail}"
        entry = self.cache.entry(cache_key)
        expiries = _expiries.get()
        if entry is not None:
            if self.observer is not None:
                self.observer.userdb_cache_result("hit")
            if expiries is not None:
                expiries.append(entry[0])
            return entry[1]
        if _cached_only.get():
            raise NotCached
        if self.observer is not None:
            self.observer.userdb_cache_result("miss")
        record = None
        for source in self.sources:
            record = self._ask(source, key)
            if record is not None:
                break
        expires = self.cache.put(cache_key, record)
        if expiries is not None:
            expiries.append(expires)
        return record

    def _ask(self, source: Source, key: LookupKey) -> Record | None:
        started = time.monotonic()
        timeout = source.settings.timeout
        try:
            future = self._calls.submit(source.lookup, key)
            record = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._failed(source, key, f"no answer within {timeout:g}s", started)
        except UserdbError as error:
            self._failed(source, key, error.reason, started)
        except RuntimeError as error:  # the pool is shut down: this snapshot was replaced by a reload
            self._failed(source, key, str(error), started)
        if self.observer is not None:
            self.observer.userdb_lookup(source.driver, "hit" if record else "miss", time.monotonic() - started)
        return record

    def _failed(self, source: Source, key: LookupKey, reason: str, started: float) -> None:
        if self.observer is not None:
            self.observer.userdb_lookup(source.driver, "error", time.monotonic() - started)
        logs.event(
            "userdb_error",
            logging.WARNING,
            driver=source.driver,
            source=source.label,
            recipient=key.address,
            reason=reason,
        )
        raise UserdbError(f"{source.label}: {reason}")  # mda resolve shows which source failed

    def check(self) -> list[tuple[str, str | None]]:
        """Ask every source once: (label, problem or None), for ``mda check-config --connect``."""
        results: list[tuple[str, str | None]] = []
        for source in self.sources:
            try:
                self._calls.submit(source.check).result(timeout=source.settings.timeout)
                results.append((source.label, None))
            except concurrent.futures.TimeoutError:
                results.append((source.label, f"no answer within {source.settings.timeout:g}s"))
            except UserdbError as error:
                results.append((source.label, error.reason))
            except Exception as error:
                results.append((source.label, " ".join(f"{type(error).__name__}: {error}".split())))
        return results

    def close(self) -> None:
        """Close connections; calls still waiting fail (451) rather than use a closed pool."""
        for source in self.sources:
            with contextlib.suppress(Exception):
                source.close()
        for pool in (getattr(self, "_calls", None), getattr(self, "resolver", None)):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
