"""CPU time and memory of a server's whole process tree, read from /proc.

Dovecot forks one lmtp process per connection (plus auth, log, config, anvil)
and mda may run several workers, so looking at the top process alone would
hide most of the work.  Both servers are measured the same way: every process
whose ancestry leads to the server's root process.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> tuple[int, int] | None:
    """Return (ppid, utime+stime+cutime+cstime in ticks) or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, utime + stime + cutime + cstime


def tree_pids(roots: list[int]) -> list[int]:
    """All live processes descending from (and including) the given roots."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry))
    result: list[int] = []
    stack = [p for p in roots if os.path.exists(f"/proc/{p}")]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        result.append(pid)
        stack.extend(children.get(pid, []))
    return result


def tree_cpu_seconds(roots: list[int]) -> float:
    """utime+stime of the live tree, children included.

    Children that exited and were reaped by a process of the tree are counted
    through their parent's cutime/cstime, so the sum only grows while the
    server runs: the difference of two readings is the CPU the tree used in
    between.
    """
    total = 0
    for pid in tree_pids(roots):
        st = _read_stat(pid)
        if st is not None:
            total += st[1]
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_name(pid: int) -> str:
    """The command name, for reports that say which process was largest."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


@dataclass
class MemorySampler:
    """Samples VmHWM of every process of a tree in a background thread.

    VmHWM is the kernel's own peak-RSS counter, but it disappears with the
    process: short-lived Dovecot lmtp processes must be read while they live,
    hence the polling.  `peak_kib` maps pid -> highest VmHWM seen,
    `peak_total_kib` is the largest sum of VmRSS over the tree at one instant.
    """

    roots: list[int]
    interval: float = 0.05
    peak_kib: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    peak_total_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one reading now (also called at the end so the last state is seen)."""
        total = 0
        for pid in tree_pids(self.roots):
            hwm = _status_kib(pid, "VmHWM")
            rss = _status_kib(pid, "VmRSS")
            if hwm is None:
                continue
            if hwm > self.peak_kib.get(pid, 0):
                self.peak_kib[pid] = hwm
                self.names.setdefault(pid, process_name(pid))
            total += rss or 0
        self.peak_total_kib = max(self.peak_total_kib, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def max_process_kib(self) -> int:
        """The largest peak RSS of any single process of the tree."""
        return max(self.peak_kib.values(), default=0)

    def largest(self) -> tuple[int, str, int]:
        """(pid, name, VmHWM KiB) of the process with the largest peak."""
        if not self.peak_kib:
            return (0, "?", 0)
        pid = max(self.peak_kib, key=lambda p: self.peak_kib[p])
        return pid, self.names.get(pid, "?"), self.peak_kib[pid]
