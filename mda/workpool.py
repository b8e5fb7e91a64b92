"""The storage threads: blocking work (deliveries, look-ups, configuration loads) off the event loop.

A ``concurrent.futures.Executor``, so ``loop.run_in_executor`` works as with any other, plus ``call``:
the hand-off every delivery takes. ``call`` queues the function and returns a plain loop future that the
thread settles with a single ``loop.call_soon_threadsafe``; ``run_in_executor`` would make a
``concurrent.futures.Future`` (with its condition variable), a work item and a chained loop future per
job, which at small message sizes is a measurable share of the event loop's time.

Threads start as jobs find none idle, up to ``threads``; ``shutdown`` runs what is queued, then stops them.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Job:
    """One ``call``: its result reaches the loop future ``waiter``; ``finished`` is set (on the loop) once
    the function returned, whether or not anyone still waits for its result."""

    __slots__ = ("done", "error", "finished", "loop", "result", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiter: asyncio.Future[Any] = loop.create_future()
        self.finished: asyncio.Future[None] | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        """On the loop, once the thread is done with the job."""
        self.done = True
        if not self.waiter.cancelled():
            if self.error is not None:
                self.waiter.set_exception(self.error)
            else:
                self.waiter.set_result(self.result)
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)
        self.error = None  # no reference cycle through the traceback

    async def wait_finished(self) -> None:
        """Wait until the function returned (after the awaiting task was cancelled: the work goes on)."""
        if not self.done:
            self.finished = self.loop.create_future()
            await self.finished


class WorkPool(concurrent.futures.Executor):
    """Up to ``threads`` threads named ``name-N`` taking jobs from one queue."""

    def __init__(self, threads: int, name: str) -> None:
        self._max = threads
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False
        # The threads are daemons (an idle one must not keep the interpreter alive), so a process that
        # exits without draining (an error out of the event loop) must still let a delivery in
        # progress finish — above all an mbox append — before the interpreter stops its threads.
        atexit.register(self.shutdown)

    def call(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> Job:
        """Run ``fn(*args)`` in a thread; ``Job.waiter`` is the loop future of its result."""
        job = Job(loop)

        def run() -> None:
            try:
                job.result = fn(*args)
            except BaseException as error:
                job.error = error
            if not loop.is_closed():  # a loop closed meanwhile has nobody waiting
                loop.call_soon_threadsafe(job.settle)

        self._put(run)
        return job

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """The ``Executor`` interface (``run_in_executor``): the result through a ``concurrent.futures.Future``."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._put(run)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the threads finish what is queued, then stop (``cancel_futures`` is not supported: queued
        deliveries always run)."""
        atexit.unregister(self.shutdown)
        with self._lock:
            if self._closed:
                threads = []
            else:
                self._closed = True
                threads = list(self._threads)
                for _ in threads:
                    self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _put(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle else 0
            self._jobs.put(job)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            job()
            with self._lock:
                self._idle += 1
