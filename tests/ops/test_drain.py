"""Graceful shutdown waits on events, not on a clock: the real ``Application`` in-process, real sockets.

The loop's clock can be stopped (``StoppedClockLoop``): from then on no timer fires, so a wait that
polls (sleeps, then looks again) never returns, while one woken by the session it waits for does. The
test's own waits are events too (socket reads), and a thread cancels the run after a real-time limit.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mda.app import Application
from mda.config import load_for_serve
from mda.metrics import build_metrics
from tests.inprocess import mbox_lmtp_config, reply_lines

LIMIT = 30.0
"""Real seconds after which a test's loop is cancelled (the test then fails)."""


class StoppedClockLoop(asyncio.SelectorEventLoop):
    """asyncio's loop whose clock can be stopped: after ``stop_clock()`` no timer is ever due."""

    stopped_at: float | None = None

    def time(self) -> float:
        return self.stopped_at if self.stopped_at is not None else super().time()

    def stop_clock(self) -> None:
        self.stopped_at = super().time()


def run_with_limit(main: Callable[[StoppedClockLoop], Awaitable[Any]]) -> Any:
    """Run ``main`` on a ``StoppedClockLoop``; cancelled (``CancelledError``) after ``LIMIT`` real seconds."""

    async def guarded() -> Any:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, StoppedClockLoop)
        task = asyncio.current_task()
        assert task is not None
        guard = threading.Timer(LIMIT, lambda: loop.call_soon_threadsafe(task.cancel))
        guard.start()
        try:
            return await main(loop)
        finally:
            guard.cancel()

    with asyncio.Runner(loop_factory=StoppedClockLoop) as runner:
        return runner.run(guarded())


async def serving(tmp_path: Path, **settings: Any) -> tuple[Application, asyncio.Task[int], int]:
    """The application running (``run()`` as a task) once it listens, and its LMTP port."""
    started = asyncio.Event()
    config = load_for_serve(mbox_lmtp_config(tmp_path, **settings))
    metrics = build_metrics(CollectorRegistry())
    app = Application(config, out=io.StringIO(), metrics=metrics, on_ready=started.set)
    run = asyncio.get_running_loop().create_task(app.run())
    await started.wait()
    return app, run, app.listeners[0].server.sockets[0].getsockname()[1]


@pytest.fixture(autouse=True)
def _no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def test_shutdown_after_the_timeout_ends_when_the_last_delivery_does(tmp_path: Path) -> None:
    """Past ``shutdown_timeout`` a delivery under way still gets its reply, then the process stops: the
    wait for it ends when the session finishes, with no timer to come round."""

    async def main(loop: StoppedClockLoop) -> list[str]:
        app, run, port = await serving(tmp_path, shutdown_timeout="0s")
        lock = tmp_path / "alice.mbox.lock"
        lock.write_text("held by the test\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reply_lines(reader, 1))[0].startswith("220 ")
        writer.write(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert [line[:3] for line in await reply_lines(reader, 4)] == ["250", "250", "250", "354"]
        writer.write(b"Subject: one\r\n\r\nbody\r\n.\r\n")
        (session,) = app.listeners[0].context.sessions
        while not session.busy:  # the end of DATA has been read: the delivery waits for the lock
            await asyncio.sleep(0)
        loop.stop_clock()
        app.request_stop()
        while not app.shutting_down:
            await asyncio.sleep(0)
        lock.unlink()
        replies = await reply_lines(reader, 2)
        assert await run == 0
        writer.close()
        return replies

    delivered, goodbye = run_with_limit(main)
    assert delivered.startswith("250 2.0.0")
    assert goodbye.startswith("421 4.3.2")
    assert b"Subject: one\n\nbody\n" in (tmp_path / "alice.mbox").read_bytes()


def test_shutdown_with_idle_sessions_ends_as_they_close(tmp_path: Path) -> None:
    """Idle sessions are told ``421`` at once; the stop follows their close, whatever ``shutdown_timeout``."""

    async def main(loop: StoppedClockLoop) -> list[str]:
        app, run, port = await serving(tmp_path, shutdown_timeout="1h")
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for reader, _ in streams:
            assert (await reply_lines(reader, 1))[0].startswith("220 ")
        loop.stop_clock()
        app.request_stop()
        goodbyes = [(await reply_lines(reader, 1))[0] for reader, _ in streams]
        assert await run == 0
        for _, writer in streams:
            writer.close()
        return goodbyes

    assert [line[:9] for line in run_with_limit(main)] == ["421 4.3.2"] * 3


def test_shutdown_without_sessions_returns_at_once(tmp_path: Path) -> None:
    async def main(loop: StoppedClockLoop) -> int:
        app, run, _ = await serving(tmp_path)
        loop.stop_clock()
        app.request_stop()
        return await run

    assert run_with_limit(main) == 0
