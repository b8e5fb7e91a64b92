"""A small LMTP client that times every transaction.

smtp-source measures throughput but reports no per-message latency and does
not pipeline, so this client, written with asyncio raw sockets, runs
`concurrency` connections, each sending LHLO once and then transactions
back to back with MAIL, every RCPT and DATA pipelined in one write
(RFC 2920), the body, and reading one reply per accepted recipient after the
final dot (RFC 2033).  A transaction's latency runs from writing MAIL to
reading the last recipient's reply.

Given a payload (content.data_payload: the bytes smtp-source -F sends), it
sends that instead of its own headers and filler.  It reports its own CPU
seconds, so that a run can show the client was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import time
from dataclasses import dataclass, field

LINE = 78  # payload line length, like smtp-source (short of the 998 limit)


@functools.lru_cache(maxsize=4)
def make_body(size: int) -> bytes:
    """`size` bytes of CRLF-terminated 'X' lines, ending in CRLF, never needing dot-stuffing.

    Cached: a 25 MiB body is built once, not once per message.
    """
    line = b"X" * LINE + b"\r\n"
    full, rest = divmod(size, len(line))
    body = line * full
    if rest == 1:
        # One byte cannot hold a line ending: lengthen the previous line instead.
        body = body[:-2] + b"X\r\n" if full else b"\r\n"
    elif rest >= 2:
        body += b"X" * (rest - 2) + b"\r\n"
    return body


def make_headers(sender: str, rcpt: str, seq: int) -> bytes:
    """Header block; the payload after it has exactly the requested size (as smtp-source's -l)."""
    return (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-Id: <bench.{seq}.{time.monotonic_ns()}@bench.test>\r\n"
        f"Subject: bench {seq}\r\n\r\n"
    ).encode()


class LmtpError(Exception):
    """The server refused something: the benchmark result would be meaningless."""


@dataclass
class LatencyResult:
    """Per-transaction latencies (seconds) and the wall time of the whole run."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    """CPU seconds (user + system) of the client's thread during the run."""
    errors: list[str] = field(default_factory=list)


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read one (possibly multi-line) reply; return its code and text."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        if not raw:
            raise LmtpError("connection closed by server")
        line = raw.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), "\n".join(lines)


def recipients_for(rcpts: int, domain: str, user: str = "user") -> list[str]:
    """The same recipient names smtp-source -r N uses: Nuser, ..., 2user, user."""
    return [f"{i}{user}@{domain}" for i in range(rcpts, 1, -1)] + [f"{user}@{domain}"]


async def _connection(
    host: str,
    port: int,
    counter: list[int],
    total: int,
    size: int,
    rcpts: int,
    domain: str,
    result: LatencyResult,
    payload: bytes | None,
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        code, text = await _read_reply(reader)
        if code != 220:
            raise LmtpError(f"greeting: {text}")
        writer.write(f"LHLO client.{domain}\r\n".encode())
        code, text = await _read_reply(reader)
        if code != 250:
            raise LmtpError(f"LHLO: {text}")
        sender = f"sender@{domain}"
        body = make_body(size) if payload is None else b""
        to = recipients_for(rcpts, domain)
        envelope = (f"MAIL FROM:<{sender}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in to) + "DATA\r\n").encode()
        while counter[0] < total:
            counter[0] += 1
            headers = make_headers(sender, to[-1], counter[0]) if payload is None else b""
            start = time.perf_counter()
            writer.write(envelope)
            replies = [await _read_reply(reader) for _ in range(len(to) + 2)]
            if replies[0][0] != 250 or any(c != 250 for c, _ in replies[1:-1]) or replies[-1][0] != 354:
                raise LmtpError("envelope refused: " + " | ".join(t for _, t in replies))
            if payload is None:
                writer.write(headers)
                writer.write(body)
                writer.write(b".\r\n")
            else:
                writer.write(payload)
            await writer.drain()
            finals = [await _read_reply(reader) for _ in to]
            elapsed = time.perf_counter() - start
            bad = [t for c, t in finals if c != 250]
            if bad:
                raise LmtpError("delivery failed: " + " | ".join(bad))
            result.latencies.append(elapsed)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await _read_reply(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_latency_async(
    host: str,
    port: int,
    messages: int,
    concurrency: int,
    size: int,
    rcpts: int = 1,
    domain: str = "bench.test",
    payload: bytes | None = None,
) -> LatencyResult:
    """Send `messages` messages over `concurrency` connections and time each one.

    payload, when given, is the whole DATA payload (dot-stuffed, end marker included).
    """
    result = LatencyResult()
    counter = [0]  # shared: a connection takes the next message while any remain
    start = time.perf_counter()
    tasks = [
        _connection(host, port, counter, messages, size, rcpts, domain, result, payload)
        for _ in range(min(concurrency, messages))
    ]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    result.wall = time.perf_counter() - start
    result.errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return result


def run_latency(
    host: str,
    port: int,
    messages: int,
    concurrency: int,
    size: int,
    rcpts: int = 1,
    domain: str = "bench.test",
    payload: bytes | None = None,
) -> LatencyResult:
    """Blocking wrapper for the runner; measures the CPU of this thread, where the event loop runs."""
    cpu0 = time.thread_time()
    result = asyncio.run(run_latency_async(host, port, messages, concurrency, size, rcpts, domain, payload))
    result.cpu = time.thread_time() - cpu0
    return result
