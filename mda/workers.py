"""``workers: N``: a supervisor process and N worker processes sharing every listener.

Why processes: one asyncio loop uses one core; parsing and spooling mail is CPU work, so several
loops use several cores (docs/architecture.md, "Threads and processes").

How they share the listeners: the supervisor binds every listener once (TCP and UNIX, with the checks
of ``mda.binding``) before it forks, and every worker accepts on the inherited descriptors; nobody sets
``SO_REUSEPORT``, so no other process can join a port mda serves. A worker that dies is replaced by a
fork that inherits the same sockets: nothing needs to be bound again, so the supervisor drops to
``user:`` right after binding, like the workers.

Configuration: the supervisor is the one that watches the files (and takes ``SIGHUP``): it loads and
validates the new configuration, counts the reload once, closes listeners the new configuration
removed, and signals every worker to reload. A replacement worker starts on the configuration in use,
not the one the supervisor started with. Listeners added by a reload need a restart.

Metrics: the supervisor creates a private ``PROMETHEUS_MULTIPROC_DIR`` before ``prometheus_client`` is
first imported; workers write their values there and the supervisor's ``/metrics`` aggregates them
(dead workers' live gauges are dropped with ``mark_process_dead``). ``/healthz`` fails when the
heartbeat of any live process (a worker's event loop, or the supervisor's own loop) is stale.

The supervisor restarts a worker that dies, forwards ``SIGTERM``/``SIGINT``, and talks to systemd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType

from mda import logs, sdnotify
from mda.app import (
    MAX_DELIVERY_WAIT,
    Application,
    ListenerKey,
    listener_key,
    metrics_server,
    run_loop,
    storage_line,
)
from mda.binding import bind_tcp, bind_unix, drop_privileges, resolve_identity, service_identity
from mda.config import BindAddress, Config, ListenerConfig, current_digest, watched_files
from mda.config import load_for_serve as load_config
from mda.metrics import MULTIPROC_ENV, Metrics, build_metrics
from mda.metrics import preload as preload_metrics
from mda.probes import HEARTBEAT_INTERVAL, MetricsServer
from mda.server import State
from mda.space import mail_roots
from mda.yamlsource import ConfigError

READY_TIMEOUT = 30.0
"""How long the supervisor waits for the first workers to listen before it gives up."""
RESTART_BACKOFF = 1.0
"""A worker that dies within this many seconds of its start is restarted only after this delay."""
WATCH_INTERVAL = 0.5
"""How often the supervisor compares the configuration files with the running configuration."""
TICK = 0.1


@dataclass
class Worker:
    index: int
    pid: int
    started: float
    ready_fd: int | None = None


@dataclass
class Supervisor:
    config: Config
    count: int
    sockets: dict[ListenerKey, socket.socket] = field(default_factory=dict)
    """Every listening socket, bound here once and inherited by each worker."""
    lock_fds: dict[ListenerKey, int] = field(default_factory=dict)
    workers: dict[int, Worker] = field(default_factory=dict)
    metrics_server: MetricsServer | None = None
    metrics: Metrics | None = None
    stopping: bool = False
    reload_requested: bool = False
    started: bool = False
    seen: str = ""
    """Digest of the configuration files as last compared (the running configuration's after a reload)."""

    # --- listeners -------------------------------------------------------------------------------

    def bind(self, listener: ListenerConfig) -> str:
        """Bind one listener for every worker; returns its start-up line."""
        key = listener_key(listener)
        if listener.bind.is_unix:
            owner = resolve_identity(listener.socket_owner) if listener.socket_owner else None
            service = service_identity(self.config)
            sock, lock_fd = bind_unix(listener.bind.path, listener.socket_mode, owner, service)
            self.sockets[key] = sock
            self.lock_fds[key] = lock_fd
            return f"listening {listener.protocol} {listener.bind}"
        sock = bind_tcp(listener.bind.host, listener.bind.port)
        self.sockets[key] = sock
        host, port = sock.getsockname()[:2]
        return f"listening {listener.protocol} {BindAddress(host, port)}"

    def unbind(self, key: ListenerKey, listener: ListenerConfig) -> None:
        """Close a listener (the workers close their copies as they reload or stop)."""
        sock = self.sockets.pop(key, None)
        if sock is None:  # never bound here: the path may be another process's
            return
        sock.close()
        if listener.bind.is_unix:
            with contextlib.suppress(OSError):  # after dropping privileges the directory may be root's
                os.unlink(listener.bind.path)
        lock_fd = self.lock_fds.pop(key, None)
        if lock_fd is not None:
            os.close(lock_fd)

    # --- workers ---------------------------------------------------------------------------------

    def spawn(self, index: int) -> Worker:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            code = 1
            try:
                code = self._worker_main(index, write_fd)
            finally:
                logs.flush()
                os._exit(code)
        os.close(write_fd)
        worker = Worker(index=index, pid=pid, started=time.monotonic(), ready_fd=read_fd)
        self.workers[pid] = worker
        return worker

    def _worker_main(self, index: int, ready_fd: int) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.environ.pop(sdnotify.ENV, None)  # only the supervisor speaks to systemd
        if self.metrics_server is not None:
            self.metrics_server.close_sockets()
        for fd in [*self.lock_fds.values(), *(w.ready_fd for w in self.workers.values() if w.ready_fd is not None)]:
            os.close(fd)
        logs.set_context(worker=index)

        def ready() -> None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        app = Application(self.config, inherited=self.sockets, worker=True, on_ready=ready)
        return run_loop(app.run())

    def wait_ready(self, deadline: float) -> bool:
        """True when every worker said it listens (its ready pipe got a byte)."""
        for worker in self.workers.values():
            if worker.ready_fd is None:
                continue
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([worker.ready_fd], [], [], max(0.0, remaining))
            data = os.read(worker.ready_fd, 1) if readable else b""
            os.close(worker.ready_fd)
            worker.ready_fd = None
            if data != b"1":
                return False
        return True

    def reap(self) -> None:
        """Collect dead workers; restart them (on the configuration in use) unless stopping."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            logs.event("worker_died", logging.ERROR, worker=worker.index, pid=pid, status=code)
            if time.monotonic() - worker.started < RESTART_BACKOFF:
                time.sleep(RESTART_BACKOFF)
            new = self.spawn(worker.index)
            logs.event("worker_started", worker=new.index, pid=new.pid, config=self.config.digest)

    def forward(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # --- reload ----------------------------------------------------------------------------------

    def files_changed(self) -> bool:
        """True once per change of the watched files' content (as ``mda.reload`` decides it)."""
        if self.config.source is None:
            return False
        current = current_digest(watched_files(self.config))
        if current == self.seen:
            return False
        self.seen = current
        return True

    def reload(self) -> None:
        """Load and validate as a worker would; on success switch, count once and signal every worker."""
        assert self.metrics is not None
        old = self.config
        if old.source is None:
            logs.event("reload_skipped", reason="embedded default configuration")
            return
        sdnotify.reloading()
        try:
            new = load_config(old.source)
            State.build(new)
        except ConfigError as error:
            self.metrics.config_reloaded(False)
            logs.event("reload_failed", logging.ERROR, file=error.file, line=error.line, error=str(error))
            return
        except Exception as error:  # an unreadable users file, a policy that cannot be built
            self.metrics.config_reloaded(False)
            logs.event("reload_failed", logging.ERROR, file=str(old.source), error=f"{type(error).__name__}: {error}")
            return
        finally:
            sdnotify.ready(f"{self.count} workers")
        wanted = {listener_key(listener) for listener in new.listeners}
        for listener in old.listeners:
            if listener_key(listener) not in wanted:
                self.unbind(listener_key(listener), listener)
        self.config = new
        self.seen = new.digest
        self.metrics.config_reloaded(True)
        self.forward(signal.SIGHUP)

    # --- signals ---------------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def is_ready(self) -> bool:
        return self.started and not self.stopping and len(self.workers) == self.count

    # --- main ------------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        config = self.config
        identity = service_identity(config)
        self.seen = config.digest
        try:
            lines = [self.bind(listener) for listener in config.listeners]
            if config.metrics is not None:
                self.metrics_server = metrics_server(config, self.is_ready, lambda: mail_roots(self.config))
                lines.append(f"metrics http://{self.metrics_server.address_text}/metrics")
        except BaseException:
            self.close_listeners()
            raise
        lines.append(storage_line(config))
        self.metrics = build_metrics()
        preload_metrics()
        # Everything is bound: from here on this process, and every worker it forks, runs as user:.
        drop_privileges(identity)
        for index in range(self.count):
            self.spawn(index)
        if not self.wait_ready(time.monotonic() + READY_TIMEOUT):
            logs.event("workers_failed", logging.ERROR, reason="a worker did not start")
            self.stopping = True
            self.shutdown()
            return 1
        if self.metrics_server is not None:
            self.metrics_server.start()
        for line in lines:
            print(line, flush=True)
        self.started = True
        logs.event("supervisor_started", workers=self.count, pid=os.getpid(), uid=os.getuid())
        sdnotify.ready(f"{self.count} workers")
        next_watch = next_beat = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_beat:
                self.metrics.beat()
                next_beat = now + HEARTBEAT_INTERVAL
            if now >= next_watch:
                self.reload_requested |= self.files_changed()
                next_watch = now + WATCH_INTERVAL
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self.reap()
            time.sleep(TICK)
        sdnotify.stopping()
        self.shutdown()
        return 0

    def close_listeners(self) -> None:
        for listener in self.config.listeners:
            self.unbind(listener_key(listener), listener)
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    def shutdown(self) -> None:
        """SIGTERM to every worker (each drains), wait, then clean up what the supervisor owns."""
        self.forward(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout + MAX_DELIVERY_WAIT
        while self.workers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.close_listeners()
        logs.event("stopped", workers=self.count)


def serve_workers(config: Config) -> int:
    """Run ``config.workers`` worker processes under a supervisor; returns the exit code."""
    directory = tempfile.mkdtemp(prefix="mda-metrics-")
    identity = service_identity(config)
    if identity is not None and os.geteuid() == 0:
        os.chown(directory, identity.uid, identity.gid)
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    os.environ[MULTIPROC_ENV] = directory
    try:
        return Supervisor(config, config.workers).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
