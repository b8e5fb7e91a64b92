"""Pure parts of the benchmark: percentiles, medians, the delivery count and the table.

Kept free of servers and sockets so that they can be unit-tested quickly.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100).

    Nearest rank rather than interpolation: with a few hundred samples p99 is
    then a latency that a message really had, not a blend of two.
    """
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile out of range: {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """Median ignoring NaN (a metric that a run could not measure)."""
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def count_delivered(mail_root: str) -> int:
    """Number of message files in every new/ and cur/ under the mail root.

    Counting files (not trusting the servers' 250 replies) is what shows
    that each delivery really reached the disk; Maildir++ folders
    (.Folder/new) are included, tmp/ is not.
    """
    total = 0
    for dirpath, dirnames, filenames in os.walk(mail_root):
        base = os.path.basename(dirpath)
        if base in ("new", "cur"):
            total += sum(1 for name in filenames if not name.startswith("."))
            dirnames.clear()
    return total


def check_arrived(mail_root: str, messages: int, recipients: int) -> tuple[bool, int, int]:
    """(ok, found, expected): every message must be stored once per recipient."""
    expected = messages * recipients
    found = count_delivered(mail_root)
    return found == expected, found, expected


def ratio(a: float, b: float) -> float:
    """a/b, NaN when either side is missing or b is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


@dataclass
class Measures:
    """What one run measures (and, as medians, what a cell reports)."""

    msgs_per_s: float = math.nan
    deliveries_per_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    cpu_per_1000: float = math.nan
    rss_mib: float = math.nan
    tree_rss_mib: float = math.nan
    lat_client_cpu_per_1000: float = math.nan
    """The latency client's own CPU seconds per 1000 messages (it must stay well below the server's)."""
    lat_server_cpu_per_1000: float = math.nan
    """The server tree's CPU seconds per 1000 messages during the latency run."""
    arrived: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class CellResult(Measures):
    """Median results of one server in one grid cell."""

    server: str
    size: int
    concurrency: int
    recipients: int
    content: str = "filler"
    arrived: bool = True
    runs: int = 0


def human_size(n: int) -> str:
    """4096 -> '4 KiB', 1048576 -> '1 MiB' (sizes in the table)."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def _fmt(v: float, digits: int = 1) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


HEADERS = [
    "content",
    "size",
    "conc",
    "rcpt",
    "server",
    "msgs/s",
    "deliv/s",
    "p50 ms",
    "p99 ms",
    "CPU s/1k msgs",
    "peak RSS MiB",
    "tree RSS MiB",
    "lat client CPU s/1k",
    "lat server CPU s/1k",
    "arrived",
]
LABELS = 5
"""The first columns name the cell and the server (left-aligned); the rest are figures."""


def table_rows(results: Sequence[CellResult], reference: str = "dovecot", candidate: str = "mda") -> list[list[str]]:
    """One row per server per cell (content kind, size, concurrency, recipients), then a ratio row
    candidate/reference when both ran.

    The ratio row puts msgs/s, p99, CPU/1000 and both RSS ratios in those columns:
    above 1 is better for msgs/s, below 1 is better for the others.  The latency
    client's CPU is shown per server only: it is there to show the client was not the bottleneck.
    """
    rows: list[list[str]] = []
    cells: dict[tuple[str, int, int, int], dict[str, CellResult]] = {}
    for r in results:
        cells.setdefault((r.content, r.size, r.concurrency, r.recipients), {})[r.server] = r
    for (content, size, conc, rcpt), by_server in cells.items():
        for name, r in by_server.items():
            rows.append(
                [
                    content,
                    human_size(size),
                    str(conc),
                    str(rcpt),
                    name,
                    _fmt(r.msgs_per_s),
                    _fmt(r.deliveries_per_s),
                    _fmt(r.p50_ms, 2),
                    _fmt(r.p99_ms, 2),
                    _fmt(r.cpu_per_1000, 2),
                    _fmt(r.rss_mib),
                    _fmt(r.tree_rss_mib),
                    _fmt(r.lat_client_cpu_per_1000, 2),
                    _fmt(r.lat_server_cpu_per_1000, 2),
                    "yes" if r.arrived else "NO",
                ]
            )
        if candidate in by_server and reference in by_server:
            c, d = by_server[candidate], by_server[reference]
            rows.append(
                [
                    content,
                    human_size(size),
                    str(conc),
                    str(rcpt),
                    f"{candidate}/{reference}",
                    _fmt(ratio(c.msgs_per_s, d.msgs_per_s), 2),
                    _fmt(ratio(c.deliveries_per_s, d.deliveries_per_s), 2),
                    "-",
                    _fmt(ratio(c.p99_ms, d.p99_ms), 2),
                    _fmt(ratio(c.cpu_per_1000, d.cpu_per_1000), 2),
                    _fmt(ratio(c.rss_mib, d.rss_mib), 2),
                    _fmt(ratio(c.tree_rss_mib, d.tree_rss_mib), 2),
                    "-",
                    "-",
                    "yes" if (c.arrived and d.arrived) else "NO",
                ]
            )
    return rows


def format_text(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    """Aligned plain-text table for the terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= LABELS else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def format_markdown(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    """GitHub-style pipe table for RESULTS.md."""
    out = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if i >= LABELS else "---" for i in range(len(headers))) + " |",
    ]
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(out)
