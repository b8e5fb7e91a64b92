"""Listeners: sockets opened from configuration, and what every session of one listener shares.

A ``State`` is one configuration snapshot with its policy; sessions take it at MAIL, so a reload changes
behaviour for the next transaction only. A ``ListenerContext`` admits or refuses connections (access
list, connection limits), and turns what sessions report into log lines (and metrics, via the
``Reporter``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mda import logs, replies
from mda.addresses import Address
from mda.auth import Authenticator
from mda.config import Config, Limits, ListenerConfig
from mda.dataread import DataResult
from mda.delivery import Outcome, Transaction
from mda.metrics import Metrics
from mda.policy import Policy, Resolution
from mda.replies import Reply
from mda.space import check_capacity
from mda.spool import MemoryBudget
from mda.statestore import close_databases
from mda.tls import TlsContexts
from mda.userdb import NotCached

if TYPE_CHECKING:
    from mda.session.transport import Session


RESOLUTION_CACHE_SECONDS = 30.0
"""How long a policy answer is reused. A snapshot's users and aliases never change (a reload builds a new
``State``), but ``passwd`` domains read the system's user database, which may change under it."""
RESOLUTION_CACHE_SIZE = 10_000


class AnswerCache:
    """Policy answers given under one ``State``, each reused until its expiry.

    The one part of a ``State`` that changes while it is in use: its configuration and policy never do.
    """

    def __init__(self, size: int = RESOLUTION_CACHE_SIZE) -> None:
        self.size = size
        self._answers: dict[tuple[Address, bool], tuple[float, Resolution, int]] = {}

    def get(self, address: Address, smtputf8: bool, now: float) -> tuple[Resolution, int] | None:
        """The answer and how many userdb answers it was built from, unless absent or expired."""
        found = self._answers.get((address, smtputf8))
        if found is None or found[0] <= now:
            return None
        return found[1], found[2]

    def put(self, address: Address, smtputf8: bool, answer: Resolution, until: float, answers_used: int) -> None:
        if len(self._answers) >= self.size:  # a flood of distinct addresses: start afresh
            self._answers.clear()
        self._answers[(address, smtputf8)] = (until, answer, answers_used)


class State:
    """One configuration and its policy, never changed: a reload builds a new ``State`` and swaps it in.

    What it does change is its ``AnswerCache``, which lives and dies with it.
    """

    __slots__ = ("answers", "config", "policy")

    def __init__(self, config: Config, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        self.answers = AnswerCache()

    @classmethod
    def build(cls, config: Config, metrics: Metrics | None = None) -> State:
        policy = Policy(config)
        if policy.userdb is not None:
            policy.userdb.observer = metrics
        return cls(config, policy)

    def resolve(self, address: Address, *, smtputf8: bool, size: int | None) -> Resolution:
        """Policy (cached per snapshot), then room for ``size`` bytes in every mailbox: space and quota."""
        return check_capacity(self.config, self._policy_answer(address, smtputf8), size)

    def resolve_now(self, address: Address, *, smtputf8: bool, size: int | None) -> Resolution | None:
        """``resolve`` when it needs no user database look-up (none configured, or the ``userdb`` cache
        holds what it needs), else None: what may block is left to ``resolve_async``."""
        userdb = self.policy.userdb
        if userdb is None:
            return self.resolve(address, smtputf8=smtputf8, size=size)
        answer = self._remembered(address, smtputf8)
        if answer is None:
            try:
                with userdb.cached_only():
                    answer = self._resolve_and_remember(address, smtputf8)
            except NotCached:
                return None
        return check_capacity(self.config, answer, size)

    async def resolve_async(self, address: Address, *, smtputf8: bool, size: int | None) -> Resolution:
        """``resolve`` without blocking the event loop on a user database: what ``resolve_now`` cannot
        answer is resolved in the userdb's threads."""
        resolution = self.resolve_now(address, smtputf8=smtputf8, size=size)
        if resolution is not None:
            return resolution
        userdb = self.policy.userdb
        assert userdb is not None
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            userdb.resolver, functools.partial(self._resolve_and_remember, address, smtputf8)
        )
        return check_capacity(self.config, answer, size)

    def close_later(self, delay: float) -> None:
        """Close this snapshot's userdb and ``state:`` connections once transactions that took it have moved on."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay, close_databases, self.config.state)
        userdb = self.policy.userdb
        if userdb is not None:
            loop.call_later(delay, userdb.close)

    def _policy_answer(self, address: Address, smtputf8: bool) -> Resolution:
        return self._remembered(address, smtputf8) or self._resolve_and_remember(address, smtputf8)

    def _remembered(self, address: Address, smtputf8: bool) -> Resolution | None:
        """A policy answer reused: for ``RESOLUTION_CACHE_SECONDS`` at most, and when it was built from
        ``userdb`` answers, no longer than the first of them stays in the userdb cache (so ``ttl: 0``
        asks the database for every RCPT); a temporary failure is never reused."""
        found = self.answers.get(address, smtputf8, time.monotonic())
        if found is None:
            return None
        answer, answers_used = found
        if answers_used and self.policy.userdb is not None:
            self.policy.userdb.reused(answers_used)  # each counts as the cache hit it stands for
        return answer

    def _resolve_and_remember(self, address: Address, smtputf8: bool) -> Resolution:
        now = time.monotonic()
        userdb = self.policy.userdb
        expiries: list[float] = []
        if userdb is None:
            answer = self.policy.resolve(address, smtputf8=smtputf8)
        else:
            with userdb.answers_used() as expiries:
                answer = self.policy.resolve(address, smtputf8=smtputf8)
        until = min([now + RESOLUTION_CACHE_SECONDS, *expiries])
        if until > now and not answer.reply.is_temporary:
            self.answers.put(address, smtputf8, answer, until, len(expiries))
        return answer


class Reporter:
    """Where sessions report outcomes: one log line per event, and the matching metric updates.

    Storage never imports metrics (docs/architecture.md, "Parts"): it reports its timings in ``StoreResult``, and
    they are recorded here, next to the log line of the same delivery.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

    def session_opened(self, listener: ListenerConfig, client: str) -> None:
        logs.event("session_open", listener=listener.label, client=client)
        if self.metrics is not None:
            self.metrics.session_opened(str(listener.bind), listener.protocol)

    def session_closed(self, listener: ListenerConfig, client: str) -> None:
        logs.event("session_close", listener=listener.label, client=client)
        if self.metrics is not None:
            self.metrics.session_closed(str(listener.bind), listener.protocol)

    def connection_refused(self, listener: ListenerConfig, client: str, reason: str) -> None:
        logs.event("connection_refused", logging.WARNING, listener=listener.label, client=client, reason=reason)
        if self.metrics is not None:
            self.metrics.connection_refused(reason)

    def recipient_refused(self, listener: ListenerConfig, client: str, sender: str, resolution: Resolution) -> None:
        logs.event(
            "rcpt_refused",
            listener=listener.label,
            client=client,
            sender=sender,
            recipient=resolution.address,
            code=resolution.reply.code,
            enhanced=resolution.reply.enhanced,
        )
        if self.metrics is not None:
            self.metrics.recipient_refused(resolution.reply.enhanced)

    def delivered(
        self, listener: ListenerConfig, client: str, txn: Transaction, data: DataResult, outcomes: Sequence[Outcome]
    ) -> None:
        """One log line and one counter per accepted RCPT (LMTP replies once per RCPT, RFC 2033 §4.2)."""
        seconds = time.monotonic() - txn.started
        delay = round(seconds, 3)
        metrics = self.metrics
        if metrics is not None:
            metrics.message_received(str(listener.bind), listener.protocol, data.size)
            metrics.replied(listener.protocol, seconds)
        timed: set[int] = set()
        counted: set[int] = set()
        for outcome in outcomes:
            logs.event(
                "delivery",
                logging.INFO if outcome.reply.is_success else logging.WARNING,
                queue_id=txn.queue_id,
                client=client,
                sender=txn.sender,
                recipient=outcome.resolution.address,
                status=outcome.reply.status,
                code=outcome.reply.code,
                enhanced=outcome.reply.enhanced,
                size=data.size,
                delay=delay,
                stored=outcome.locations,
                reason=outcome.reason,
            )
            if metrics is None:
                continue
            mailboxes = outcome.resolution.mailboxes
            storage_format = mailboxes[0].format if mailboxes else "none"
            metrics.delivery(outcome.reply.code, outcome.reply.enhanced, storage_format)
            if id(outcome.sieve_errors) not in counted:  # SMTP outcomes of one address share the list
                counted.add(id(outcome.sieve_errors))
                for kind in outcome.sieve_errors:
                    metrics.sieve_error(kind)
            for result in outcome.results:
                if id(result) not in timed:  # a copy shared by two RCPTs was written once
                    timed.add(id(result))
                    metrics.stored(storage_format, result.write_seconds, result.fsync_seconds)


class ListenerContext:
    """Shared by every session of one listener: its settings, admission and reporting."""

    def __init__(self, listener: ListenerConfig, app: ListenerHost) -> None:
        self.config = listener
        self.app = app
        self.sessions: set[Session] = set()
        self.per_client: Counter[str] = Counter()
        self._labels: dict[Session, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        """Sessions' requests and success notifications in flight, kept referenced until done."""

    @property
    def state(self) -> State:
        return self.app.state

    def in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task of the loop, referenced here until it is done (asyncio keeps
        only a weak reference to a task)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def limits(self) -> Limits:
        return self.config.limits

    @property
    def executor(self) -> Executor | None:
        return self.app.executor

    @property
    def spool_dir(self) -> Path | None:
        return self.app.spool_dir

    @property
    def spool_budget(self) -> MemoryBudget:
        return self.app.spool_budget

    @property
    def shutting_down(self) -> bool:
        return self.app.shutting_down

    def current_listener(self) -> ListenerConfig:
        """This listener's entry in the current configuration (so a reload's new cert paths count)."""
        same = [
            listener
            for listener in self.state.config.listeners
            if listener.bind == self.config.bind and listener.protocol == self.config.protocol
        ]
        # Several listeners on port 0 share one bind text: then only the listener's own entry is certain.
        return same[0] if len(same) == 1 else self.config

    def client_of(self, session: Session) -> str:
        """The client as logged: its IP address, or for a UNIX socket the peer's process and user
        (``unix:pid=123,uid=106``, from ``SO_PEERCRED``; ``unix:PATH`` when the kernel does not say)."""
        if session.client_ip or not self.config.bind.is_unix:
            return session.client_ip
        label = self._labels.get(session)
        if label is None:
            label = f"unix:{self.config.bind.path}"
            sock = session.transport.get_extra_info("socket") if session.transport is not None else None
            if sock is not None and hasattr(socket, "SO_PEERCRED"):
                try:
                    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                    pid, uid, _ = struct.unpack("3i", creds)
                    label = f"unix:pid={pid},uid={uid}"
                except OSError:
                    pass
            self._labels[session] = label
        return label

    def admit(self, session: Session) -> Reply | None:
        """Refuse a client outside ``allow`` (``554 5.7.1``) or over a connection limit (``421 4.7.0``)."""
        client = session.client_ip
        label = self.client_of(session)
        if not self.config.allows(client):
            self.app.reporter.connection_refused(self.config, label, "not_allowed")
            return replies.CLIENT_DENIED
        if self.app.shutting_down:
            return replies.SHUTTING_DOWN
        if self.app.open_sessions() >= self.limits.max_connections:
            self.app.reporter.connection_refused(self.config, label, "max_connections")
            return replies.TOO_MANY_CONNECTIONS
        if client and self.per_client[client] >= self.limits.max_connections_per_client:
            self.app.reporter.connection_refused(self.config, label, "max_connections_per_client")
            return replies.TOO_MANY_CONNECTIONS
        self.sessions.add(session)
        self.per_client[client] += 1
        self.app.reporter.session_opened(self.config, label)
        return None

    def session_closed(self, session: Session) -> None:
        label = self._labels.pop(session, session.client_ip)
        if session in self.sessions:
            self.sessions.discard(session)
            self.per_client[session.client_ip] -= 1
            if self.per_client[session.client_ip] <= 0:
                del self.per_client[session.client_ip]
            self.app.reporter.session_closed(self.config, label)
        self.app.sessions_changed()

    def recipient_checked(self, session: Session, sender: str, resolution: Resolution) -> None:
        if not resolution.accepted:
            self.app.reporter.recipient_refused(self.config, self.client_of(session), sender, resolution)

    def delivered(self, session: Session, txn: Transaction, data: DataResult, outcomes: Sequence[Outcome]) -> None:
        self.app.reporter.delivered(self.config, self.client_of(session), txn, data, outcomes)

    def error_limit_reached(self, session: Session, errors: int) -> None:
        logs.event("error_limit", logging.WARNING, listener=self.config.label, client=session.client_ip, errors=errors)

    def log_exception(self, session: Session, error: BaseException) -> None:
        logs.logger.error(
            "session_error",
            exc_info=error,
            extra={"fields": {"listener": self.config.label, "client": self.client_of(session)}},
        )


class ListenerHost(Protocol):
    """What a listener needs from the application (kept small so tests and tools can provide it)."""

    state: State
    executor: Executor | None
    authenticator: Authenticator
    tls: TlsContexts
    """AUTH of every listener of this process: one penalty per client address, whichever listener it uses."""
    spool_dir: Path | None
    spool_budget: MemoryBudget
    reporter: Reporter
    shutting_down: bool

    def open_sessions(self) -> int:
        """Sessions open on every listener of this process."""
        ...

    def sessions_changed(self) -> None:
        """Called when a session ends, and while shutting down when one finished a request (graceful
        shutdown waits for the last session, then for the last delivery, on these calls)."""
        ...
