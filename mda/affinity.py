"""Each worker process on a core of its own: its event loop, storage threads and log writer share it.

A delivery passes work, and the interpreter lock, between a worker's event loop and its storage threads
several times per message. When those threads float over several cores, each hand-off wakes another
core (an inter-processor interrupt; on a virtual machine, an exit to the hypervisor) and moves the
process's data between caches. On the 2-core VM of ``contrib/bench/RESULTS.md`` two workers pinned this
way delivered 1.43x the 4 KiB messages per second of the same two workers floating, 1.31x on 100 KiB
prose, with 0.81x and 0.88x the CPU per message (README "Workers"). Several workers still use every
core: worker ``i`` takes the ``i``-th core this process may use (round robin when there are more workers
than cores).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

from mda import logs


def worker_cpu(index: int, allowed: Iterable[int]) -> int | None:
    """The core for worker ``index`` among the ``allowed`` ones, or None when there is only one."""
    cpus = sorted(allowed)
    return cpus[index % len(cpus)] if len(cpus) > 1 else None


def pin_process(cpu: int) -> None:
    """Keep every thread of this process on ``cpu``; threads started later inherit it. A refusal (a
    sandbox without ``sched_setaffinity``) is logged and changes nothing else."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        tasks = [str(os.getpid())]
    try:
        for task in tasks:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task), {cpu})
    except OSError as error:
        logs.event("cpu_affinity_failed", logging.WARNING, cpu=cpu, error=str(error))
