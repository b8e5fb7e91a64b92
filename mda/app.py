"""The running server: listeners, the storage thread pool, signals and graceful shutdown.

One asyncio loop per process (uvloop when installed). ``SIGTERM``/``SIGINT`` stop accepting, let
transactions in flight finish within ``shutdown_timeout``, answer ``421 4.3.2`` to idle sessions and
exit 0. Started as root with ``user:`` set, the process checks that user can read the TLS files,
binds its listeners and then drops to that user (docs/architecture.md, "Privileges"). A task on the loop beats
every second; ``/healthz`` fails when the beat stops (``mda.probes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TextIO

from mda import logs, replies, sdnotify
from mda.auth import Authenticator
from mda.binding import bind_tcp, bind_unix, drop_privileges, resolve_identity, service_identity
from mda.config import BindAddress, Config, ListenerConfig, watched_files
from mda.config import load_for_serve as load_config
from mda.enums import Protocol, TlsMode
from mda.metrics import Metrics, build_metrics, exposition_with, oldest_heartbeat
from mda.policyservice import protocol_factory as policy_protocol
from mda.probes import MetricsServer, heartbeat, is_alive
from mda.reload import ConfigWatcher
from mda.server import ListenerContext, Reporter, State
from mda.session.transport import Session
from mda.space import mail_roots
from mda.spool import MemoryBudget
from mda.storage.dircache import MAX_DESCRIPTORS as KEPT_DIRECTORIES
from mda.storage.dircache import sweep_expired
from mda.tls import TlsContexts
from mda.workpool import WorkPool
from mda.yamlsource import ConfigError

STORAGE_THREADS = 32
"""Blocking file work (write, fsync, link, lock) runs here so a slow disk never stalls the loop."""
MAX_DELIVERY_WAIT = 60.0
"""After ``shutdown_timeout``, how long a delivery already running may still take before exit."""


class Listener:
    """One open listening socket and its context."""

    def __init__(
        self, key: ListenerKey, config: ListenerConfig, context: ListenerContext, server: asyncio.AbstractServer
    ) -> None:
        self.key = key
        self.config = config
        self.context = context
        self.server = server
        self.lock_fd: int | None = None
        self.owns_path = True

    def address_text(self) -> str:
        """The address as bound (port 0 resolved)."""
        if self.config.bind.is_unix:
            return str(self.config.bind)
        host, port = self.server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
        return str(BindAddress(host, port))

    def close(self) -> None:
        self.server.close()
        if self.config.bind.is_unix and self.owns_path:
            with contextlib.suppress(OSError):
                os.unlink(self.config.bind.path)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


ListenerKey = tuple[str, str, int]
"""(protocol, bind as written, occurrence): how a reload tells a kept listener from an added or removed
one, and how a worker finds the socket its supervisor bound for it. The occurrence tells apart listeners
written alike (two ``127.0.0.1:0`` listeners are two sockets on two ports)."""


def keyed_listeners(listeners: Iterable[ListenerConfig]) -> dict[ListenerKey, ListenerConfig]:
    """Every listener under its key, in configuration order."""
    keyed: dict[ListenerKey, ListenerConfig] = {}
    seen: dict[tuple[str, str], int] = {}
    for listener in listeners:
        written = (listener.protocol, str(listener.bind))
        occurrence = seen[written] = seen.get(written, -1) + 1
        keyed[(*written, occurrence)] = listener
    return keyed


def storage_line(config: Config) -> str:
    """The last start-up line: where mail goes and whether it is fsync'd."""
    storage = config.storage
    return f"delivering to {storage.path} ({storage.format}, {'fsync' if storage.fsync else 'no fsync'})"


USERDB_CLOSE_DELAY = 60.0
"""Seconds a replaced configuration keeps its user-database connections for transactions still under way."""


class Application:
    """Owns the process: configuration state, listeners, executor, metrics, reload and lifecycle.

    ``inherited`` holds the listening sockets a worker supervisor bound before it forked: a worker
    accepts on those and binds nothing itself. ``worker`` means a supervisor prints the start-up lines,
    serves ``/metrics``, watches the configuration, counts reloads and talks to systemd.
    """

    def __init__(
        self,
        config: Config,
        *,
        out: TextIO = sys.stdout,
        metrics: Metrics | None = None,
        inherited: dict[ListenerKey, socket.socket] | None = None,
        worker: bool = False,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.out = out
        self.storage_pool = WorkPool(STORAGE_THREADS, "mda-store")
        self.executor: Executor | None = self.storage_pool
        self.spool_dir: Path | None = config.state_dir
        self.spool_budget = MemoryBudget(config.limits.spool_memory)
        """Memory every session's spool of this process shares (``limits.spool_memory``)."""
        self.metrics = metrics if metrics is not None else build_metrics()
        self.state = State.build(config, self.metrics)
        self.reporter = Reporter(self.metrics)
        self.authenticator = Authenticator()
        self.tls = TlsContexts()
        self.shutting_down = False
        self.listeners: list[Listener] = []
        self.retired: list[Listener] = []
        """Listeners closed by a reload whose sessions may still be open."""
        self.inherited = dict(inherited or {})
        self.worker = worker
        self.on_ready = on_ready
        self.metrics_server: MetricsServer | None = None
        self.watcher: ConfigWatcher | None = None
        self.ready = False
        self._stop = asyncio.Event()
        self._sessions_changed = asyncio.Event()
        """Set when a session ends or finishes a request: what graceful shutdown waits on (``drain``)."""
        self._reloading = False
        self._reload_again = False
        self.metrics.config_loaded_now(config.digest)

    # ListenerHost
    def open_sessions(self) -> int:
        return sum(len(listener.context.sessions) for listener in [*self.listeners, *self.retired])

    def sessions_changed(self) -> None:
        self._sessions_changed.set()

    def announce(self, line: str) -> None:
        if not self.worker:
            print(line, file=self.out, flush=True)

    async def open_listener(self, key: ListenerKey, config: ListenerConfig) -> Listener:
        loop = asyncio.get_running_loop()
        context = ListenerContext(config, self)
        lock_fd = None
        owned = True
        # RFC 8314 implicit TLS: the handshake comes first; the certificate is re-read per handshake.
        implicit = config.tls is not None and config.tls.mode == TlsMode.IMPLICIT
        tls = self.tls.listener_context(config.tls) if config.tls is not None and implicit else None
        factory = policy_protocol(context) if config.protocol == Protocol.POLICY else lambda: Session(context)
        if key in self.inherited:
            sock = self.inherited.pop(key)
            owned = False  # the supervisor owns the socket file and its lock
        elif self.worker:
            raise ListenerNotInherited(f"{config.label}: a listener added to the configuration needs a restart")
        elif config.bind.is_unix:
            owner = resolve_identity(config.socket_owner) if config.socket_owner else None
            sock, lock_fd = bind_unix(config.bind.path, config.socket_mode, owner, service_identity(self.state.config))
        else:
            sock = bind_tcp(config.bind.host, config.bind.port)
        if config.bind.is_unix:
            server = await loop.create_unix_server(factory, sock=sock, ssl=tls)
        else:
            server = await loop.create_server(factory, sock=sock, ssl=tls)
        listener = Listener(key, config, context, server)
        listener.lock_fd = lock_fd
        listener.owns_path = owned
        return listener

    async def start(self) -> None:
        config = self.state.config
        identity = service_identity(config)
        raise_open_files_limit(config)
        for key, listener_config in keyed_listeners(config.listeners).items():
            try:
                listener = await self.open_listener(key, listener_config)
            except ListenerNotInherited as error:  # added by a reload the supervisor made before this fork
                logs.event("listener_not_opened", logging.ERROR, listener=listener_config.label, reason=str(error))
                continue
            self.listeners.append(listener)
            self.announce(f"listening {listener_config.protocol} {listener.address_text()}")
        if config.metrics is not None and not self.worker:
            self.metrics_server = metrics_server(config, self.is_ready, lambda: mail_roots(self.state.config))
            self.metrics_server.start()
            self.announce(f"metrics http://{self.metrics_server.address_text}/metrics")
        self.announce(storage_line(config))
        drop_privileges(identity)
        for listener in self.listeners:  # load the STARTTLS contexts as the user that will use them
            if listener.config.tls is not None:
                self.tls.available(listener.config.tls)
        for sock in self.inherited.values():  # listeners the configuration no longer has
            sock.close()
        self.inherited.clear()
        self.ready = True

    def is_ready(self) -> bool:
        """``/readyz``: listeners bound and a configuration loaded, and not shutting down."""
        return self.ready and not self.shutting_down

    def _beat(self) -> None:
        """Once a second: the loop's heartbeat for ``/healthz``, and expired directory descriptors closed
        (``storage.dircache``), so an idle server keeps no directory of the mail filesystem open."""
        self.metrics.beat()
        sweep_expired()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self.start()
        beating = loop.create_task(heartbeat(self._beat))
        config = self.state.config
        # With several workers the supervisor watches the files and signals every worker (SIGHUP).
        if config.source is not None and not self.worker:  # the embedded default has no file to watch
            self.watcher = ConfigWatcher(loop, watched_files(config), self.request_reload, running=config.digest)
            self.watcher.start()
        logs.event("started", listeners=len(self.listeners), config=self.state.config.digest, pid=os.getpid())
        if self.on_ready is not None:
            self.on_ready()
        if not self.worker:
            sdnotify.ready()
        await self._stop.wait()
        if not self.worker:
            sdnotify.stopping()
        if self.watcher is not None:
            self.watcher.stop()
        await self.drain()
        beating.cancel()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.state.policy.userdb is not None:
            self.state.policy.userdb.close()
        self.authenticator.close()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    # --- reload ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP or a changed file: reload once; a request during a reload runs one more after it."""
        if self.shutting_down:
            return
        if self._reloading:
            self._reload_again = True
            return
        self._reloading = True
        asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        try:
            while True:
                self._reload_again = False
                await self.reload()
                if not self._reload_again:
                    return
        finally:
            self._reloading = False

    async def reload(self) -> bool:
        """Load, validate, swap (docs/architecture.md, "Parts"); on any error keep the running configuration."""
        old = self.state.config
        source = old.source
        if source is None:
            logs.event("reload_skipped", reason="embedded default configuration")
            return False
        if not self.worker:
            sdnotify.reloading()
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(self.executor, load_config, source)
            state = State.build(new, self.metrics)
        except ConfigError as error:
            self._count_reload(False)
            logs.event("reload_failed", logging.ERROR, file=error.file, line=error.line, error=str(error))
            return False
        except Exception as error:  # an unreadable users file, a policy that cannot be built
            self._count_reload(False)
            logs.event("reload_failed", logging.ERROR, file=str(source), error=f"{type(error).__name__}: {error}")
            return False
        finally:
            if not self.worker:
                sdnotify.ready()
        await self._apply_listeners(new)
        # Sessions take the state at MAIL: a transaction under way keeps the old one (server.State).
        previous, self.state = self.state, state
        previous.close_later(USERDB_CLOSE_DELAY)
        self.spool_budget.limit = new.limits.spool_memory
        if (new.log_format, new.log_level) != (old.log_format, old.log_level):
            logs.setup(new.log_format, new.log_level)
        if self.watcher is not None:
            self.watcher.set_paths(watched_files(new), running=new.digest)
        self._count_reload(True)
        self.metrics.config_loaded_now(new.digest)
        logs.event("reloaded", config=new.digest, previous=old.digest)
        return True

    def _count_reload(self, ok: bool) -> None:
        """One count per reload of the service: with several workers the supervisor counts (mda.workers)."""
        if not self.worker:
            self.metrics.config_reloaded(ok)

    async def _apply_listeners(self, new: Config) -> None:
        """Open added listeners, close removed ones, keep the others (and their sessions) untouched."""
        wanted = keyed_listeners(new.listeners)
        kept: list[Listener] = []
        for listener in self.listeners:
            if listener.key in wanted:
                listener.config = listener.context.config = wanted.pop(listener.key)
                kept.append(listener)
            else:
                listener.close()
                logs.event("listener_closed", listener=listener.config.label)
                self.retired.append(listener)
        for key, listener_config in wanted.items():
            try:
                listener = await self.open_listener(key, listener_config)
            except ListenerNotInherited as error:
                logs.event("listener_not_opened", logging.ERROR, listener=listener_config.label, reason=str(error))
                continue
            except (OSError, LookupError) as error:
                logs.event("listener_failed", logging.ERROR, listener=listener_config.label, error=str(error))
                continue
            kept.append(listener)
            logs.event("listener_opened", listener=listener_config.label, address=listener.address_text())
        self.listeners = kept

    # --- shutdown --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop accepting, let transactions in flight finish, then ``421 4.3.2`` to what remains.

        Idle sessions are told at once; a session inside DATA finishes its delivery and gets its
        replies first (the protocol closes it right after them). After ``shutdown_timeout`` every
        session still open is told ``421`` and closed; a delivery still running in the thread pool
        completes before the process exits, so nothing acknowledged is ever lost.
        """
        self.shutting_down = True
        logs.event("stopping", sessions=self.open_sessions())
        for listener in self.listeners:
            listener.close()
        for session in self._sessions():
            if not session.busy and not session.in_transaction:
                _say_goodbye(session)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.state.config.shutdown_timeout
        await self._until(lambda: not self.open_sessions(), deadline)
        for session in self._sessions():
            if not session.busy:  # a busy one answers its DATA, then closes itself
                _say_goodbye(session)
        await self._until(lambda: not any(session.busy for session in self._sessions()), deadline + MAX_DELIVERY_WAIT)
        await loop.run_in_executor(None, self.storage_pool.shutdown, True)
        logs.event("stopped")

    async def _until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` holds or the loop's clock reaches ``deadline``; True when it holds.

        Woken by ``sessions_changed`` only (a session ended, or finished a request), never by a timer
        before the deadline. The event is cleared in the same step that finds ``done()`` false, so no
        change can slip in between.
        """
        loop = asyncio.get_running_loop()
        while not done():
            self._sessions_changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sessions_changed.wait(), remaining)
        return True

    def _sessions(self) -> list[Session]:
        listeners = [*self.listeners, *self.retired]
        return [session for listener in listeners for session in list(listener.context.sessions)]


def _say_goodbye(session: Session) -> None:
    with contextlib.suppress(Exception):
        session.say_goodbye(replies.SHUTTING_DOWN)


class ListenerNotInherited(Exception):
    """A worker binds nothing: a listener its supervisor did not bind cannot be opened there."""


def metrics_server(config: Config, ready: Callable[[], bool], roots: Callable[[], Iterable[Path]]) -> MetricsServer:
    """The HTTP endpoint: ``/healthz`` alive while every event loop's heartbeat is recent; ``roots`` are the
    mail roots of the configuration in use, measured at each scrape."""
    assert config.metrics is not None
    bind = config.metrics.bind
    alive = lambda: is_alive(oldest_heartbeat(), time.time())  # noqa: E731
    return MetricsServer(bind.host, bind.port, ready, alive, exposition_with(roots))


FILES_PER_SESSION = 3
"""Descriptors one session may hold: its socket, a spool spilled to a file, the copy being written."""
SPARE_FILES = 256
"""Listeners, the metrics server, SQLite state files, Sieve scripts, standard streams."""


def raise_open_files_limit(config: Config) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` to what ``max_connections`` sessions need, up to the hard limit.

    The common soft default of 1024 would otherwise refuse a few hundred sessions in DATA with
    ``EMFILE`` long before ``max_connections``; the hard limit stays the administrator's to set.
    """
    connections = max([config.limits.max_connections, *(item.limits.max_connections for item in config.listeners)])
    wanted = connections * FILES_PER_SESSION + SPARE_FILES + KEPT_DIRECTORIES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logs.event("open_files_limit", logging.WARNING, limit=new, wanted=wanted)


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (docs/architecture.md), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
