"""``workers: N``: a supervisor process and N worker processes sharing every listener.

Why processes: one asyncio loop uses one core; parsing and spooling mail is CPU work, so several
loops use several cores (docs/architecture.md, "Threads and processes").

How they share the listeners: the supervisor binds every listener once (TCP and UNIX, with the checks
of ``mda.binding``) before it forks, and every worker accepts on the inherited descriptors; nobody sets
``SO_REUSEPORT``, so no other process can join a port mda serves. A worker that dies is replaced by a
fork that inherits the same sockets: nothing needs to be bound again, so the supervisor drops to
``user:`` right after binding, like the workers.

Configuration: the supervisor is the one that watches the files (``mda.reload``, as a single process
does) and takes ``SIGHUP``: it loads and validates the new configuration, counts the reload once,
closes listeners the new configuration removed, and signals every worker to reload. A replacement
worker starts on the configuration in use, not the one the supervisor started with. A reload that adds
a listener cannot hand its socket to workers already running: the supervisor binds it (as ``user:``),
starts a new worker in place of each one, and the old ones drain (``SIGTERM``: they finish their
transactions) and exit.

Metrics: ``mda.serving`` sets a private ``PROMETHEUS_MULTIPROC_DIR`` before this module (and so
``prometheus_client``) is imported; workers write their values there and the supervisor's ``/metrics``
aggregates them (dead workers' live gauges are dropped with ``mark_process_dead``). ``/healthz`` fails
when the heartbeat of any live process (a worker's event loop, or the supervisor's own loop) is stale.

Waiting: the supervisor runs an asyncio loop and waits on events only: each worker's pidfd (readable
once that process has exited, the sentinel hypercorn waits on), its ready pipe, signals, the
configuration watcher, and timers for the heartbeat and a restart's back-off. It restarts a worker that
dies, forwards ``SIGTERM``/``SIGINT``, and talks to systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time

from mda import logs, sdnotify
from mda.affinity import pin_process, worker_cpu
from mda.app import (
    MAX_DELIVERY_WAIT,
    Application,
    ListenerKey,
    keyed_listeners,
    metrics_server,
    run_loop,
    storage_line,
)
from mda.binding import bind_tcp, bind_unix, drop_privileges, resolve_identity, service_identity
from mda.config import BindAddress, Config, ListenerConfig, watched_files
from mda.config import load_for_serve as load_config
from mda.metrics import Metrics, build_metrics, process_dead
from mda.probes import MetricsServer, heartbeat
from mda.reload import ConfigWatcher
from mda.server import State
from mda.space import mail_roots
from mda.yamlsource import ConfigError

READY_TIMEOUT = 30.0
"""How long the supervisor waits for the first workers to listen before it gives up."""
RESTART_BACKOFF = 1.0
"""A worker that dies within this many seconds of its start is restarted only after this delay."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals the supervisor handles, held back while it forks (see ``Supervisor.spawn``)."""


class Worker:
    """One worker process and the descriptors the supervisor waits on for it."""

    def __init__(self, index: int, pid: int, ready_fd: int) -> None:
        self.index = index
        self.pid = pid
        self.started = time.monotonic()
        self.sentinel = os.pidfd_open(pid)
        """Readable once the process has exited (then ``waitpid`` returns at once)."""
        self.ready_fd: int | None = ready_fd
        """The worker writes one byte here once it listens; closed after that byte or at its exit."""
        self.ready: asyncio.Future[bool] | None = None


class Supervisor:
    """Binds the listeners, forks ``count`` workers, and keeps them running until told to stop."""

    def __init__(self, config: Config, count: int) -> None:
        self.config = config
        self.count = count
        self.sockets: dict[ListenerKey, socket.socket] = {}
        """Every listening socket, bound here once and inherited by each worker."""
        self.lock_fds: dict[ListenerKey, int] = {}
        self.workers: dict[int, Worker] = {}
        self.metrics_server: MetricsServer | None = None
        self.metrics: Metrics | None = None
        self.watcher: ConfigWatcher | None = None
        self.stopping = False
        self.started = False
        self._reload_when_started = False
        """A ``SIGHUP`` came before the workers were up: reload once they are."""
        self._stop = asyncio.Event()
        self._all_exited = asyncio.Event()
        """Set while no worker process is left (shutdown waits for it)."""
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        """Worker index → its restart, delayed by ``RESTART_BACKOFF``."""
        self._retiring: set[int] = set()
        """Workers replaced after a reload added a listener (pids): draining, never restarted."""
        self._replacing: set[asyncio.Task[None]] = set()

    # --- listeners -------------------------------------------------------------------------------

    def bind(self, key: ListenerKey, listener: ListenerConfig) -> str:
        """Bind one listener for every worker; returns its start-up line."""
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
        """Fork worker ``index``; from now on its exit wakes ``_exited`` and its readiness ``_readied``.

        The handled signals are blocked across the fork: until the child has reset them, one sent to it
        would run the supervisor's handlers through the inherited wake-up descriptor of this loop.
        """
        read_fd, write_fd = os.pipe()
        supervisor = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(read_fd)
                code = 1
                try:
                    _stop_with(supervisor)
                    code = self._worker_main(index, write_fd)
                finally:
                    logs.flush()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.close(write_fd)
        worker = Worker(index, pid, read_fd)
        self.workers[pid] = worker
        self._all_exited.clear()
        loop = asyncio.get_running_loop()
        worker.ready = loop.create_future()
        loop.add_reader(worker.sentinel, self._exited, worker)
        loop.add_reader(read_fd, self._readied, worker)
        return worker

    def _worker_main(self, index: int, ready_fd: int) -> int:
        signal.set_wakeup_fd(-1)  # the supervisor loop's (Python 3.12 resets it at fork by itself)
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.environ.pop(sdnotify.ENV, None)  # only the supervisor speaks to systemd
        if self.metrics_server is not None:
            self.metrics_server.close_sockets()
        for worker in self.workers.values():
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
            os.close(worker.sentinel)
        for fd in self.lock_fds.values():
            os.close(fd)
        logs.set_context(worker=index)
        cpu = worker_cpu(index, os.sched_getaffinity(0))
        if cpu is not None:
            pin_process(cpu)

        def ready() -> None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        app = Application(self.config, inherited=self.sockets, worker=True, on_ready=ready)
        return run_loop(app.run())

    def _readied(self, worker: Worker) -> None:
        """The worker's ready pipe is readable: one byte once it listens, or end of file if it died first."""
        assert worker.ready_fd is not None
        try:
            data = os.read(worker.ready_fd, 1)
        except OSError:
            data = b""
        self._close_ready(worker, data == b"1")

    def _close_ready(self, worker: Worker, ready: bool) -> None:
        if worker.ready_fd is not None:
            asyncio.get_running_loop().remove_reader(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(ready)

    async def wait_ready(self, timeout: float) -> bool:
        """True when every worker said it listens (its ready pipe got a byte) within ``timeout``."""
        waits = [worker.ready for worker in self.workers.values() if worker.ready is not None]
        try:
            return all(await asyncio.wait_for(asyncio.gather(*waits), timeout))
        except TimeoutError:
            return False

    def _exited(self, worker: Worker) -> None:
        """A worker's pidfd is readable: collect it, and restart it (on the configuration in use) unless
        stopping; one that died within ``RESTART_BACKOFF`` of its start is restarted that much later."""
        status = self._collect(worker)
        if worker.pid in self._retiring:  # replaced: it drained and exited, as asked
            self._retiring.discard(worker.pid)
            return
        if self.stopping or not self.started:  # a worker that dies while starting fails the start
            return
        logs.event("worker_died", logging.ERROR, worker=worker.index, pid=worker.pid, status=status)
        quick = time.monotonic() - worker.started < RESTART_BACKOFF
        loop = asyncio.get_running_loop()
        self._restarts[worker.index] = loop.call_later(RESTART_BACKOFF if quick else 0.0, self._restart, worker.index)

    def _collect(self, worker: Worker, *, kill: bool = False) -> int:
        """Reap one worker (killing it first if asked) and forget its descriptors; returns its exit code."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        asyncio.get_running_loop().remove_reader(worker.sentinel)
        os.close(worker.sentinel)
        _, status = os.waitpid(worker.pid, 0)
        self._close_ready(worker, False)
        del self.workers[worker.pid]
        if not self.workers:
            self._all_exited.set()
        process_dead(worker.pid)
        return os.waitstatus_to_exitcode(status)

    def _restart(self, index: int) -> None:
        del self._restarts[index]
        if self.stopping:
            return
        new = self.spawn(index)
        logs.event("worker_started", worker=new.index, pid=new.pid, config=self.config.digest)

    def forward(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def replace_workers(self) -> None:
        """A new worker in place of each running one (it inherits every socket, an added one included);
        once they listen, the old ones get ``SIGTERM``: they stop accepting, finish their transactions and
        exit."""
        old = [worker for worker in self.workers.values() if worker.pid not in self._retiring]
        self._retiring.update(worker.pid for worker in old)
        for worker in old:
            self.spawn(worker.index)
        if not await self.wait_ready(READY_TIMEOUT):
            logs.event("workers_failed", logging.ERROR, reason="a replacement worker did not start")
        for worker in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        logs.event("workers_replaced", workers=self.count, reason="listener added")

    # --- reload ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """``SIGHUP`` or a changed file: reload now, or as soon as the workers are up."""
        if self.started:
            self.reload()
        else:
            self._reload_when_started = True

    def reload(self) -> None:
        """Load and validate as a worker would; on success switch, count once and signal every worker."""
        assert self.metrics is not None
        old = self.config
        if old.source is None:
            logs.event("reload_skipped", reason="embedded default configuration")
            return
        if self.stopping:
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
        wanted = keyed_listeners(new.listeners)
        for key, listener in keyed_listeners(old.listeners).items():
            if key not in wanted:
                self.unbind(key, listener)
        added = False
        for key, listener in wanted.items():
            if key in self.sockets:
                continue
            try:
                self.bind(key, listener)
                added = True
            except (OSError, LookupError) as error:  # bound as user: now; a privileged port needs a restart
                logs.event("listener_failed", logging.ERROR, listener=listener.label, error=str(error))
        self.config = new
        if self.watcher is not None:
            self.watcher.set_paths(watched_files(new), running=new.digest)
        self.metrics.config_reloaded(True)
        if added:
            task = asyncio.get_running_loop().create_task(self.replace_workers())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)
        else:
            self.forward(signal.SIGHUP)

    # --- main ------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping = True
        self._stop.set()

    def is_ready(self) -> bool:
        return self.started and not self.stopping and len(self.workers) - len(self._retiring) >= self.count

    def run(self) -> int:
        """Supervise until ``SIGTERM``/``SIGINT``; returns the exit code.

        asyncio's own loop, not uvloop: the supervisor forks from inside it, and each worker then starts
        a loop of its own (``run_loop``), which asyncio allows in a child process.
        """
        return asyncio.run(self._run())

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        config = self.config
        identity = service_identity(config)
        try:
            lines = [self.bind(key, listener) for key, listener in keyed_listeners(config.listeners).items()]
            if config.metrics is not None:
                self.metrics_server = metrics_server(config, self.is_ready, lambda: mail_roots(self.config))
                lines.append(f"metrics http://{self.metrics_server.address_text}/metrics")
        except BaseException:
            self.close_listeners()
            raise
        lines.append(storage_line(config))
        self.metrics = build_metrics()
        # Everything is bound: from here on this process, and every worker it forks, runs as user:.
        drop_privileges(identity)
        for index in range(self.count):
            self.spawn(index)
        if not await self.wait_ready(READY_TIMEOUT):
            logs.event("workers_failed", logging.ERROR, reason="a worker did not start")
            self.stopping = True
            await self.shutdown()
            return 1
        if self.metrics_server is not None:
            self.metrics_server.start()
        for line in lines:
            print(line, flush=True)
        self.started = True
        logs.event("supervisor_started", workers=self.count, pid=os.getpid(), uid=os.getuid())
        sdnotify.ready(f"{self.count} workers")
        if self._reload_when_started:
            self.reload()
        beating = loop.create_task(heartbeat(self.metrics.beat))
        if config.source is not None:  # the embedded default has no file to watch
            self.watcher = ConfigWatcher(loop, watched_files(config), self.reload, running=config.digest)
            self.watcher.start()
        await self._stop.wait()
        sdnotify.stopping()
        if self.watcher is not None:
            self.watcher.stop()
        beating.cancel()
        await self.shutdown()
        return 0

    def close_listeners(self) -> None:
        for key, listener in keyed_listeners(self.config.listeners).items():
            self.unbind(key, listener)
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    async def shutdown(self) -> None:
        """SIGTERM to every worker (each drains), wait for the last exit, then clean up what the
        supervisor owns; a worker still running after its drain's longest time is killed."""
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        self.forward(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            if self.workers:
                await asyncio.wait_for(self._all_exited.wait(), self.config.shutdown_timeout + MAX_DELIVERY_WAIT)
        for worker in list(self.workers.values()):
            self._collect(worker, kill=True)
        self.close_listeners()
        logs.event("stopped", workers=self.count)


PR_SET_PDEATHSIG = 1


def _stop_with(supervisor: int) -> None:
    """Have the kernel send this worker ``SIGTERM`` (it drains) when its supervisor dies, ``kill -9``
    included: an orphaned worker would keep the listening sockets, and the next start would fail with
    "already served by another process"."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
