"""Waiting for an event in a test: poll a condition until it holds, or fail saying what was seen.

Tests never sleep a fixed time before an assertion; they wait here for the log line, metric, file or
count that says the event happened. On timeout the ``AssertionError`` carries the last value seen
(``describe`` can turn it into something readable, such as the server's log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = 10.0
INTERVAL = 0.05


def wait_for(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    *,
    what: str = "",
    describe: Callable[[], Any] | None = None,
) -> T:
    """The first truthy value of ``predicate()``; ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            seen = describe() if describe is not None else result
            raise AssertionError(f"{what or 'condition'} not reached within {timeout} s; last seen: {seen!r}")
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], T], timeout: float = TIMEOUT, interval: float = 0.01, *, what: str = ""
) -> T:
    """``wait_for`` inside an event loop: the loop keeps running (timers fire) between polls."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout} s; last seen: {result!r}")
        await asyncio.sleep(interval)
