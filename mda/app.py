"""The running server: listeners, the storage thread pool, signals and graceful shutdown.

One asyncio loop per process (uvloop when installed). ``SIGTERM``/``SIGINT`` stop accepting, let
transactions in flight finish within ``shutdown_timeout``, answer ``421 4.3.2`` to idle sessions and
exit 0. Started as root with ``user:`` set, the process binds its listeners first and then drops to
that user (design.md, "Privileges").
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from mda import logs, replies
from mda.config import Config, ListenerConfig
from mda.protocol import MdaSession
from mda.server import ListenerContext, Reporter, State, bind_tcp, bind_unix

STORAGE_THREADS = 32
"""Blocking file work (write, fsync, link, lock) runs here so a slow disk never stalls the loop."""


class Listener:
    """One open listening socket and its context."""

    def __init__(self, config: ListenerConfig, context: ListenerContext, server: asyncio.AbstractServer) -> None:
        self.config = config
        self.context = context
        self.server = server
        self.lock_fd: int | None = None

    def address_text(self) -> str:
        if self.config.bind.is_unix:
            return f"unix:{self.config.bind.path}"
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        self.server.close()
        if self.config.bind.is_unix:
            with contextlib.suppress(OSError):
                os.unlink(self.config.bind.path)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class Application:
    """Owns the process: configuration state, listeners, executor, lifecycle."""

    def __init__(self, config: Config, *, out: TextIO = sys.stdout) -> None:
        self.state = State.build(config)
        self.out = out
        self.executor = ThreadPoolExecutor(max_workers=STORAGE_THREADS, thread_name_prefix="mda-store")
        self.spool_dir: Path | None = config.state_dir
        self.reporter = Reporter()
        self.shutting_down = False
        self.listeners: list[Listener] = []
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()

    # ListenerHost
    def open_sessions(self) -> int:
        return sum(len(listener.context.sessions) for listener in self.listeners)

    def session_finished(self) -> None:
        if self.shutting_down and self.open_sessions() == 0:
            self._idle.set()

    def announce(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def open_listener(self, config: ListenerConfig) -> Listener:
        loop = asyncio.get_running_loop()
        context = ListenerContext(config, self)
        lock_fd = None
        if config.bind.is_unix:
            sock, lock_fd = bind_unix(config.bind.path, config.socket_mode, config.socket_owner)
            server = await loop.create_unix_server(lambda: MdaSession(context), sock=sock)
        else:
            sock = bind_tcp(config.bind.host, config.bind.port, reuse_port=self.state.config.workers > 1)
            server = await loop.create_server(lambda: MdaSession(context), sock=sock)
        listener = Listener(config, context, server)
        listener.lock_fd = lock_fd
        return listener

    async def start(self) -> None:
        config = self.state.config
        for listener_config in config.listeners:
            listener = await self.open_listener(listener_config)
            self.listeners.append(listener)
            self.announce(f"listening {listener_config.protocol} {listener.address_text()}")
        storage = config.storage
        self.announce(f"delivering to {storage.path} ({storage.format}{', fsync' if storage.fsync else ', no fsync'})")
        if config.user:
            drop_privileges(config.user)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        await self.start()
        logs.event("started", listeners=len(self.listeners), config=self.state.config.digest)
        await self._stop.wait()
        await self.drain()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    async def drain(self) -> None:
        """Stop accepting, let deliveries finish, then ``421 4.3.2`` to whoever is still connected."""
        self.shutting_down = True
        logs.event("stopping", sessions=self.open_sessions())
        for listener in self.listeners:
            listener.close()
        for session in self._sessions():
            if not session.busy and session.envelope_ is None:
                await _say_goodbye(session)
        if self.open_sessions():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.state.config.shutdown_timeout)
        for session in self._sessions():
            await _say_goodbye(session)
        self.executor.shutdown(wait=True)
        logs.event("stopped")

    def _sessions(self) -> list[MdaSession]:
        return [session for listener in self.listeners for session in list(listener.context.sessions)]


async def _say_goodbye(session: MdaSession) -> None:
    with contextlib.suppress(Exception):
        await session.reply(replies.SHUTTING_DOWN)
    session._close()


def drop_privileges(user: str) -> None:
    """Become ``user`` (or ``user:group``) for good after binding; only meaningful when root."""
    if os.geteuid() != 0:
        return
    name, _, group = user.partition(":")
    entry = pwd.getpwnam(name)
    gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(entry.pw_uid)


def serve(config: Config) -> int:
    """Run the server until a signal stops it; returns the exit code."""
    logs.setup(config.log_format, config.log_level)
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(Application(config).run())
    return asyncio.run(Application(config).run())
