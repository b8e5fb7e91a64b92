"""A description of the machine, printed with every result: numbers mean nothing without it."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def _unescape(field: str) -> str:
    """Mount points in /proc are octal-escaped (space is \\040)."""
    return field.encode().decode("unicode_escape")


def filesystem(path: str) -> tuple[str, str, str]:
    """(fstype, device, mount point) of the filesystem holding `path`, from /proc/self/mountinfo."""
    real = os.path.realpath(path)
    best = ("unknown", "unknown", "")
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = _unescape(left.split()[4])
                fstype, source = right.split()[:2]
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[2]):
                    best = (fstype, _unescape(source), mount_point)
    except OSError:
        pass
    return best


def load_average() -> str:
    """1/5/15-minute load: other work on the machine skews every number, so the report shows it."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe(mail_root: str, versions: dict[str, str]) -> list[tuple[str, str]]:
    """Key/value lines for the report header."""
    fstype, device, mount = filesystem(mail_root)
    rows = [
        ("CPU", cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", f"{memory_gib():.1f} GiB"),
        ("mail root", f"{mail_root} on {fstype} {device} (mounted at {mount})"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("load average at start (1/5/15 min)", load_average()),
    ]
    rows += [(name, version) for name, version in versions.items()]
    return rows
