"""The metrics listener: ``/metrics``, ``/healthz`` (the event loop runs) and ``/readyz`` (serving).

One thread serves every connection through a selector, so a flood of slow or half-sent requests costs
sockets, never threads: at most ``MAX_CONNECTIONS`` are open (a new one closes the oldest, so a
scraper is never locked out by idle connections), and a connection that has not sent its request
within ``REQUEST_TIMEOUT`` or taken its answer within ``CONNECTION_TIMEOUT`` is closed. Answers are
small and computed in this thread: exposition reads locked values (or, with several workers, their
files), so it never needs the event loop and a slow scraper never stalls mail.

``/healthz`` answers from the event loop's heartbeat (``mda_event_loop_heartbeat_timestamp_seconds``,
set every ``HEARTBEAT_INTERVAL``): older than ``STALE_AFTER``, the loop is frozen and the answer is
``503``, so a liveness probe restarts a process that still accepts TCP connections but serves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mda.config import BindAddress

HEARTBEAT_INTERVAL = 1.0
"""Seconds between two heartbeats of an event loop."""
STALE_AFTER = 10.0
"""A heartbeat older than this means the loop is frozen (ten missed beats; a GC pause or a slow
``fsync`` on the loop's thread stays well below it)."""
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request (headers included)."""
CONNECTION_TIMEOUT = 15.0
"""Seconds after which a connection is closed whatever its state (a reader that never reads)."""
MAX_REQUEST = 8192
"""Bytes of request line and headers; a probe or a scrape sends a few hundred."""


async def heartbeat(beat: Callable[[], object]) -> None:
    """Call ``beat`` every ``HEARTBEAT_INTERVAL`` until cancelled: a loop blocked by a stuck call stops beating.

    A timer, not a wait for work: it only proves to ``/healthz`` that the loop still runs.
    """
    while True:
        beat()
        await asyncio.sleep(HEARTBEAT_INTERVAL)


def is_alive(heartbeat: float | None, now: float, stale_after: float = STALE_AFTER) -> bool:
    """True when the last heartbeat (Unix time) is recent enough; no heartbeat at all is dead."""
    return heartbeat is not None and now - heartbeat <= stale_after


@dataclass
class _Connection:
    sock: socket.socket
    opened: float
    received: bytearray = field(default_factory=bytearray)
    answer: bytes = b""
    answered: bool = False
    draining: bool = False


def _response(status: int, body: bytes, content_type: str, head_only: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}
    reason[503] = "Service Unavailable"
    header = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return header.encode("ascii") + (b"" if head_only else body)


class MetricsServer:
    """The HTTP endpoint of one process (the supervisor's, with several workers)."""

    def __init__(
        self,
        host: str,
        port: int,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
        exposition: Callable[[], tuple[bytes, str]],
    ) -> None:
        bare_host = host.strip("[]")
        family = socket.AF_INET6 if ":" in bare_host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((bare_host, port))
            self.sock.listen(128)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.ready = ready
        self.alive = alive
        self.exposition = exposition
        self.connections: dict[int, _Connection] = {}
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, name="mda-metrics", daemon=True)

    @property
    def address_text(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return str(BindAddress(str(host), port))

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self.thread.is_alive():
            self.thread.join(5)
        self.close_sockets()

    def close_sockets(self) -> None:
        """Close every descriptor (also what a forked worker does with its inherited copies)."""
        for connection in list(self.connections.values()):
            connection.sock.close()
        self.connections.clear()
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()
        self.selector.close()

    # --- the serving thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        self.selector.register(self.sock, selectors.EVENT_READ, "listen")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        while not self._stopping:
            for key, events in self.selector.select(timeout=1.0):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    return
                else:
                    self._service(key.fd, events)
            self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE, ECONNABORTED: try again at the next readiness
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                oldest = min(self.connections.values(), key=lambda c: c.opened)
                self._drop(oldest)
            sock.setblocking(False)
            self.connections[sock.fileno()] = _Connection(sock, time.monotonic())
            self.selector.register(sock, selectors.EVENT_READ, "client")

    def _expire(self, now: float) -> None:
        for connection in list(self.connections.values()):
            age = now - connection.opened
            if age > CONNECTION_TIMEOUT or (not connection.answered and age > REQUEST_TIMEOUT):
                self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        self.connections.pop(connection.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection.sock)
        connection.sock.close()

    def _service(self, fd: int, events: int) -> None:
        connection = self.connections.get(fd)
        if connection is None:
            return
        try:
            if connection.draining:  # answered: discard what the client still sends until it closes
                if not connection.sock.recv(65536):
                    self._drop(connection)
                return
            if events & selectors.EVENT_READ and not connection.answered:
                data = connection.sock.recv(4096)
                if not data:
                    self._drop(connection)
                    return
                connection.received += data
                answer = self._answer(bytes(connection.received))
                if answer is None:
                    return
                connection.answer, connection.answered = answer, True
                self.selector.modify(connection.sock, selectors.EVENT_WRITE, "client")
            if connection.answered:
                sent = connection.sock.send(connection.answer)
                connection.answer = connection.answer[sent:]
                if not connection.answer:
                    # Closing with unread request bytes would reset the connection before the client
                    # reads the answer: half-close, and read until the client closes.
                    connection.sock.shutdown(socket.SHUT_WR)
                    connection.draining = True
                    self.selector.modify(connection.sock, selectors.EVENT_READ, "client")
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(connection)

    def _answer(self, received: bytes) -> bytes | None:
        """The whole response once the request's header block is in; ``None`` while it is not."""
        end = received.find(b"\r\n\r\n")
        if end < 0:
            end = received.find(b"\n\n")
        if end < 0:
            if len(received) > MAX_REQUEST:
                return _response(431, b"request too large\n", "text/plain; charset=utf-8", False)
            return None
        parts = received[:end].split(b"\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, b"bad request\n", "text/plain; charset=utf-8", False)
        method, target = parts[0], parts[1]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", "text/plain; charset=utf-8", False)
        path = target.split("?", 1)[0]
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            body, content_type = self.exposition()
            return _response(200, body, content_type, head)
        if path == "/healthz":
            ok = self.alive()
            return _response(200 if ok else 503, b"ok\n" if ok else b"event loop stalled\n", text, head)
        if path == "/readyz":
            ok = self.ready()
            return _response(200 if ok else 503, b"ready\n" if ok else b"not ready\n", text, head)
        return _response(404, b"not found\n", text, head)
