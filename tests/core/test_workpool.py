"""The storage threads' pool: results, errors, cancellation and shutdown, with real threads and loops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mda.workpool import WorkPool

REPO = Path(__file__).resolve().parents[2]


def test_call_settles_the_loop_future_with_the_result_or_the_error() -> None:
    pool = WorkPool(2, "test")

    def fail() -> None:
        raise OSError("disk gone")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert await pool.call(loop, lambda a, b: a + b, 2, 3).waiter == 5
        with pytest.raises(OSError, match="disk gone"):
            await pool.call(loop, fail).waiter
        names = await asyncio.gather(
            *(pool.call(loop, lambda: threading.current_thread().name).waiter for _ in range(20))
        )
        assert set(names) <= {"test-0", "test-1"}

    asyncio.run(run())
    pool.shutdown()


def test_a_cancelled_waiter_can_still_wait_for_the_work_to_finish() -> None:
    pool = WorkPool(1, "test")
    release = threading.Event()
    finished: list[str] = []

    def work() -> str:
        release.wait(10)
        finished.append("done")
        return "result"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        job = pool.call(loop, work)

        async def session() -> None:
            try:
                await job.waiter
            except asyncio.CancelledError:
                await job.wait_finished()
                raise

        task = asyncio.create_task(session())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done() and not finished
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["done"]

    asyncio.run(run())
    pool.shutdown()


def test_run_in_executor_works_and_shutdown_runs_what_is_queued_then_refuses() -> None:
    pool = WorkPool(1, "test")
    gate = threading.Event()
    ran: list[int] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(pool, sum, [1, 2, 3]) == 6

    asyncio.run(run())
    pool.submit(gate.wait, 10)
    queued = [pool.submit(ran.append, n) for n in range(3)]
    gate.set()
    pool.shutdown(wait=True)
    assert ran == [0, 1, 2] and all(future.done() for future in queued)
    with pytest.raises(RuntimeError):
        pool.submit(ran.append, 4)


def test_a_job_running_when_the_interpreter_exits_is_finished_first(tmp_path: Path) -> None:
    """A process that leaves without draining (an error out of the event loop) still lets a delivery
    in progress finish before its daemon threads are stopped."""
    marker = tmp_path / "finished"
    script = (
        "import pathlib, threading, time\n"
        "from mda.workpool import WorkPool\n"
        "started = threading.Event()\n"
        "pool = WorkPool(2, 't')\n"
        f"pool.submit(lambda: (started.set(), time.sleep(1), pathlib.Path({str(marker)!r}).write_text('done')))\n"
        "started.wait()\n"
        "raise SystemExit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30)
    assert result.returncode == 3
    assert marker.read_text() == "done"
