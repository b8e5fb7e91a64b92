"""Throughput load from Postfix's smtp-source, a C LMTP client.

A C client keeps the load generator's own CPU small next to the server's,
which matters on a two-core machine where both share the processors.
smtp-source facts this relies on (Postfix 3.7, checked against a logging
server): -m is the total number of messages over all sessions; -s sessions
run in parallel; -d keeps a session's connection for its next message
(without it, each message is one connection: LHLO, MAIL, RCPT, DATA, QUIT);
-r N sends RCPT TO Nuser@, ..., 2user@, user@ for -t user@domain; it does
not pipeline; it exits non-zero when a reply is not the expected 2xx/3xx.
With -F FILE it sends that file instead of its filler and headers (see
content.py for what arrives).
"""

from __future__ import annotations

import resource
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
    cpu: float = 0.0


def smtp_source_command(
    host: str,
    port: int,
    messages: int,
    concurrency: int,
    size: int,
    rcpts: int,
    domain: str = "bench.test",
    reuse: bool = True,
    message_file: str | None = None,
) -> list[str]:
    """The smtp-source command line for one run (printed with --verbose).

    With message_file, -F FILE replaces -l SIZE: the file is the whole message.
    """
    cmd = [
        SMTP_SOURCE,
        "-L",
        "-s",
        str(concurrency),
        "-m",
        str(messages),
        *(["-F", message_file] if message_file else ["-l", str(size)]),
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
    message_file: str | None = None,
    timeout: float = 1800,
) -> LoadResult:
    """Run smtp-source to completion, time it and take its CPU seconds (user + system)."""
    cmd = smtp_source_command(host, port, messages, concurrency, size, rcpts, domain, reuse, message_file)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return LoadResult(messages, wall, proc.returncode, (proc.stdout + proc.stderr).strip(), cpu)
