"""A raw-socket LMTP/SMTP client for tests: it reads exactly the replies the protocol promises.

``smtplib.LMTP.data()`` reads only one reply after DATA (CPython gh-76984), so per-recipient LMTP
replies need this client.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        first = self.lines[0].split(" ", 1)[0] if self.lines else ""
        return first if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", first) else ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class Client:
    """Line-oriented client over TCP (``(host, port)``) or a UNIX socket (a path)."""

    def __init__(self, address: tuple[str, int] | str, timeout: float = 30.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buffer = b""
        self.greeting = self.read_reply()

    @classmethod
    def attach(cls, sock: socket.socket) -> Client:
        """A client on a socket already connected (e.g. after a PROXY header); reads the greeting."""
        client = cls.__new__(cls)
        client.sock, client.buffer = sock, b""
        client.greeting = client.read_reply()
        return client

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread: {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def read_reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = self._line()
            match = _REPLY_LINE.match(raw)
            if not match:
                raise AssertionError(f"malformed reply line {raw!r}")
            lines.append(match.group(3).decode("utf-8", "replace"))
            if match.group(2) == b" ":
                return Reply(int(match.group(1)), tuple(lines))

    def cmd(self, line: str | bytes) -> Reply:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.read_reply()

    def data(self, message: bytes, replies: int = 1) -> list[Reply]:
        """DATA with ``message`` (CRLF lines, dot-stuffed here), then read ``replies`` replies."""
        start = self.cmd("DATA")
        if start.code != 354:
            return [start]
        self.send(dot_stuff(message) + b".\r\n")
        return [self.read_reply() for _ in range(replies)]

    def is_closed(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, OSError):
            return True


def dot_stuff(message: bytes) -> bytes:
    """Wire form of a message: CRLF line ends, leading dots doubled, final CRLF ensured."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def transaction(
    client: Client, sender: str, recipients: list[str], message: bytes, *, lmtp: bool = True
) -> tuple[list[Reply], list[Reply]]:
    """MAIL, RCPTs, DATA; returns (RCPT replies, DATA replies: one per accepted RCPT in LMTP)."""
    mail = client.cmd(f"MAIL FROM:<{sender}>")
    assert mail.code == 250, mail
    rcpt = [client.cmd(f"RCPT TO:<{r}>") for r in recipients]
    accepted = sum(1 for r in rcpt if r.code == 250)
    if not accepted:
        return rcpt, [client.cmd("DATA")]
    return rcpt, client.data(message, replies=accepted if lmtp else 1)
