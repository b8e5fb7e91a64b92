"""Throughput load from Postfix's smtp-source, a C LMTP client.

A C client keeps the load generator's own CPU small next to the server's,
which matters on a two-core machine where both share the processors.
smtp-source facts this relies on (Postfix 3.7, checked against a logging
server): -m is the total number of messages over all sessions; -s sessions
run in parallel; -d keeps a session's connection for its next message
(without it, each message is one connection: LHLO, MAIL, RCPT, DATA, QUIT);
-r N sends RCPT TO Nuser@, ..., 2user@, user@ for -t user@domain; it does
not pipeline; it exits non-zero when a reply is not the expected 2xx/3xx.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from packages import SMTP_SOURCE


@dataclass
class LoadResult:
    """Wall time of one smtp-source run and what it said."""

    messages: int
    wall: float
    returncode: int
    output: str


def smtp_source_command(
    host: str,
    port: int,
    messages: int,
    concurrency: int,
    size: int,
    rcpts: int,
    domain: str = "bench.test",
    reuse: bool = True,
) -> list[str]:
    """The smtp-source command line for one run (printed with --verbose)."""
    cmd = [
        SMTP_SOURCE,
        "-L",
        "-s",
        str(concurrency),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-r",
        str(rcpts),
        "-M",
        domain,
        "-f",
        f"sender@{domain}",
        "-t",
        f"user@{domain}",
    ]
    if reuse:
        cmd.insert(2, "-d")
    cmd.append(f"{host}:{port}")
    return cmd


def run_smtp_source(
    host: str,
    port: int,
    messages: int,
    concurrency: int,
    size: int,
    rcpts: int,
    domain: str = "bench.test",
    reuse: bool = True,
    timeout: float = 1800,
) -> LoadResult:
    """Run smtp-source to completion and time it."""
    cmd = smtp_source_command(host, port, messages, concurrency, size, rcpts, domain, reuse)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    return LoadResult(messages, wall, proc.returncode, (proc.stdout + proc.stderr).strip())
