"""The disk's durable-write limit, the ceiling no fsyncing delivery agent can pass.

Each "delivery" does what a Maildir delivery must to be durable: write a
4 KiB file in tmp/, fsync it, rename it into new/, fsync new/.  Nothing else:
no protocol, no parsing.  Compared with the servers' msgs/s it tells whether
a server is disk-bound or CPU-bound.  Threads release the GIL in write and
fsync, so 16 threads show how well the filesystem batches concurrent
journal commits.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

BLOCK = b"X" * 4095 + b"\n"


def _deliver_loop(maildir: str, tag: str, deadline: float, counts: list[int], slot: int) -> None:
    tmp, new = os.path.join(maildir, "tmp"), os.path.join(maildir, "new")
    dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        n = 0
        while time.perf_counter() < deadline:
            name = f"{tag}.{n}"
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, BLOCK)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(path, os.path.join(new, name))
            os.fsync(dfd)
            n += 1
        counts[slot] = n
    finally:
        os.close(dfd)


def durable_writes_per_s(directory: str, threads: int = 1, seconds: float = 3.0) -> float:
    """Durable 4 KiB Maildir-style deliveries per second into one Maildir under `directory`."""
    maildir = os.path.join(directory, f"disk-{threads}")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds
    workers = [
        threading.Thread(target=_deliver_loop, args=(maildir, f"t{i}", deadline, counts, i)) for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    shutil.rmtree(maildir, ignore_errors=True)
    return sum(counts) / elapsed
