"""The disk's durable-write limit, the ceiling no fsyncing delivery agent can pass.

Each "delivery" does what a Maildir delivery must to be durable: write a
4 KiB file (or ``size`` bytes) in tmp/, fsync it, rename it into new/, fsync new/.  Nothing else:
no protocol, no parsing.  Compared with the servers' msgs/s it tells whether
a server is disk-bound or CPU-bound.  Threads release the GIL in write and
fsync, so 16 threads show how well the filesystem batches concurrent
journal commits.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

BLOCK = b"X" * 4095 + b"\n"


def _deliver_loop(maildir: str, tag: str, deadline: float, counts: list[int], slot: int, block: bytes) -> None:
    tmp, new = os.path.join(maildir, "tmp"), os.path.join(maildir, "new")
    dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        n = 0
        while time.perf_counter() < deadline:
            name = f"{tag}.{n}"
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(path, os.path.join(new, name))
            os.fsync(dfd)
            n += 1
        counts[slot] = n
    finally:
        os.close(dfd)


def durable_writes_per_s(directory: str, threads: int = 1, seconds: float = 3.0, size: int = len(BLOCK)) -> float:
    """Durable Maildir-style deliveries of ``size`` bytes per second into a new Maildir under `directory`.

    The files are left there for the caller to delete when nothing is measured any more: deleting
    thousands of files taxes the next minutes of file creation nearby (run.py, INODE_RECENCY_SECONDS)."""
    block = BLOCK if size == len(BLOCK) else (b"X" * 75 + b"\n") * (size // 76) + b"\n" * (size % 76)
    maildir = tempfile.mkdtemp(prefix=f"disk-{threads}-", dir=directory)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds
    workers = [
        threading.Thread(target=_deliver_loop, args=(maildir, f"t{i}", deadline, counts, i, block))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


def main() -> None:
    """``python contrib/bench/disk.py [--size 1M] [--threads 1,8,16] [--seconds 3] [DIR]``: the limit per
    message size, e.g. to tell whether 1 MiB deliveries are held by the disk's durable write bandwidth."""
    import argparse

    from run import parse_size

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--size", default="4K")
    parser.add_argument("--threads", default="1,16")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "directory", nargs="?", default=None, help="a directory on the disk to test (default: /var/tmp)"
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.directory or "/var/tmp") as directory:
        for threads in (int(t) for t in args.threads.split(",")):
            rate = durable_writes_per_s(directory, threads, args.seconds, size)
            print(f"{args.size} x {threads} thread(s): {rate:.0f} msgs/s, {rate * size / 2**20:.1f} MiB/s")


if __name__ == "__main__":
    main()
