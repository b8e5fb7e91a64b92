"""The interface both servers are driven through, so the runner treats them alike."""

from __future__ import annotations

from typing import Protocol


class Server(Protocol):
    """A running LMTP server under test.

    `root_pids` are the processes whose trees hold all the server's work
    (CPU and RSS are read from them); `mail_root` is where it stores mail.
    """

    name: str
    host: str
    port: int
    mail_root: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def root_pids(self) -> list[int]: ...

    def version(self) -> str: ...


def free_port() -> int:
    """A port nobody listens on now (benchmarks and tests run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until the server accepts connections and greets, or fail."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                greeting = s.recv(512)
                if greeting.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"server on {host}:{port} did not greet within {timeout}s: {last}")
