"""``workers: N``: a supervisor process and N worker processes sharing every listener.

Why processes: one asyncio loop uses one core; parsing and spooling mail is CPU work, so several
loops use several cores (docs/architecture.md, "Threads and processes").

How they share the listeners:

- TCP: the supervisor *reserves* each address (bound with ``SO_REUSEPORT``, never listening, so the
  kernel never queues a connection on it and port 0 is resolved once); every worker binds its own
  listening socket on that port with ``SO_REUSEPORT`` and the kernel spreads connections across them.
  Linux only groups sockets of the same user, so workers bind before they drop privileges.
- UNIX: ``SO_REUSEPORT`` does not apply; the supervisor binds the socket (mode, owner, lock file) before
  forking and every worker accepts on the inherited descriptor.

Metrics: the supervisor creates a private ``PROMETHEUS_MULTIPROC_DIR`` before ``prometheus_client`` is
first imported; workers write their values there and the supervisor's ``/metrics`` aggregates them
(dead workers' live gauges are dropped with ``mark_process_dead``).

The supervisor restarts a worker that dies, forwards ``SIGTERM``/``SIGINT``/``SIGHUP``, and talks to
systemd. It stays root when started as root (to bind for a replacement worker); workers drop to
``user:`` after binding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
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
from mda.app import MAX_DELIVERY_WAIT, Application, ListenerKey, listener_key, run_loop, storage_line
from mda.config import BindAddress, Config
from mda.metrics import MULTIPROC_ENV, MetricsServer
from mda.server import bind_unix
from mda.space import mail_roots

READY_TIMEOUT = 30.0
"""How long the supervisor waits for the first workers to listen before it gives up."""
RESTART_BACKOFF = 1.0
"""A worker that dies within this many seconds of its start is restarted only after this delay."""


def reserve_tcp(host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for the workers: bound with ``SO_REUSEPORT`` but never listening."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


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
    ports: dict[ListenerKey, int] = field(default_factory=dict)
    inherited: dict[ListenerKey, socket.socket] = field(default_factory=dict)
    reservations: list[socket.socket] = field(default_factory=list)
    lock_fds: list[int] = field(default_factory=list)
    workers: dict[int, Worker] = field(default_factory=dict)
    metrics_server: MetricsServer | None = None
    stopping: bool = False
    reload_requested: bool = False
    started: bool = False

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
        for sock in self.reservations:
            sock.close()
        if self.metrics_server is not None:
            self.metrics_server.httpd.socket.close()
        logs.set_context(worker=index)

        def ready() -> None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        app = Application(self.config, ports=self.ports, inherited=self.inherited, worker=True, on_ready=ready)
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
        """Collect dead workers; restart them unless stopping."""
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

            multiprocess.mark_process_dead(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            logs.event("worker_died", logging.ERROR, worker=worker.index, pid=pid, status=code)
            if time.monotonic() - worker.started < RESTART_BACKOFF:
                time.sleep(RESTART_BACKOFF)
            new = self.spawn(worker.index)
            logs.event("worker_started", worker=new.index, pid=new.pid)

    def forward(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

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
        lines = []
        for listener in config.listeners:
            key = listener_key(listener)
            if listener.bind.is_unix:
                sock, lock_fd = bind_unix(listener.bind.path, listener.socket_mode, listener.socket_owner)
                self.inherited[key] = sock
                self.lock_fds.append(lock_fd)
                lines.append(f"listening {listener.protocol} {listener.bind}")
            else:
                sock = reserve_tcp(listener.bind.host, listener.bind.port)
                self.reservations.append(sock)
                host, port = sock.getsockname()[:2]
                self.ports[key] = port
                lines.append(f"listening {listener.protocol} {BindAddress(host, port)}")
        if config.metrics is not None:
            self.metrics_server = MetricsServer(
                config.metrics.bind.host, config.metrics.bind.port, self.is_ready, roots=lambda: mail_roots(config)
            )
            lines.append(f"metrics http://{self.metrics_server.address_text}/metrics")
        lines.append(storage_line(config))
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
        logs.event("supervisor_started", workers=self.count, pid=os.getpid())
        sdnotify.ready(f"{self.count} workers")
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                sdnotify.reloading()
                self.forward(signal.SIGHUP)
                sdnotify.ready(f"{self.count} workers")
            self.reap()
            time.sleep(0.1)
        sdnotify.stopping()
        self.shutdown()
        return 0

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
        if self.metrics_server is not None:
            self.metrics_server.close()
        for sock in self.reservations:
            sock.close()
        for listener in self.config.listeners:
            if listener.bind.is_unix:
                with contextlib.suppress(OSError):
                    os.unlink(listener.bind.path)
        for fd in self.lock_fds:
            os.close(fd)
        logs.event("stopped", workers=self.count)


def serve_workers(config: Config) -> int:
    """Run ``config.workers`` worker processes under a supervisor; returns the exit code."""
    directory = tempfile.mkdtemp(prefix="mda-metrics-")
    if config.user and os.geteuid() == 0:
        entry = pwd.getpwnam(config.user.partition(":")[0])
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    os.environ[MULTIPROC_ENV] = directory
    try:
        return Supervisor(config, config.workers).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
