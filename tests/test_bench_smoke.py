"""The benchmark harness in contrib/bench: its pure parts fast, the whole command as a slow test.

The numbers the benchmark prints decide performance work, so the parts that
compute them (percentiles, the table, the delivery count) are checked here
without any server, and a slow test runs the real command end to end.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "contrib" / "bench"
sys.path.insert(0, str(BENCH))

report = importlib.import_module("report")
latency = importlib.import_module("latency")
run = importlib.import_module("run")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 100) == 100
    assert report.percentile(values, 0) == 1
    assert report.percentile([3.0, 1.0, 2.0], 50) == 2  # unsorted input
    assert report.percentile([7.0], 99) == 7
    assert math.isnan(report.percentile([], 50))
    with pytest.raises(ValueError):
        report.percentile([1.0], 101)


def test_median_ignores_missing_values() -> None:
    assert report.median([3.0, math.nan, 1.0, 2.0]) == 2
    assert math.isnan(report.median([math.nan]))


def test_count_delivered_counts_new_and_cur_only(tmp_path: Path) -> None:
    for user, new, cur, tmp in (("a", 3, 1, 2), ("b", 0, 2, 0)):
        md = tmp_path / "bench.test" / user / "Maildir"
        for sub, n in (("new", new), ("cur", cur), ("tmp", tmp)):
            (md / sub).mkdir(parents=True)
            for i in range(n):
                (md / sub / f"{i}.msg").write_bytes(b"x")
    folder = tmp_path / "bench.test" / "a" / "Maildir" / ".Lists" / "new"
    folder.mkdir(parents=True)
    (folder / "1.msg").write_bytes(b"x")
    (tmp_path / "bench.test" / "a" / "Maildir" / "dovecot-uidlist").write_bytes(b"")
    assert report.count_delivered(str(tmp_path)) == 3 + 1 + 2 + 1
    assert report.check_arrived(str(tmp_path), 7, 1) == (True, 7, 7)
    assert report.check_arrived(str(tmp_path), 2, 5) == (False, 7, 10)


def _cell(
    server: str,
    size: int,
    msgs: float,
    p50: float,
    p99: float,
    cpu: float,
    rss: float,
    tree: float,
    arrived: bool = True,
) -> report.CellResult:
    return report.CellResult(
        server=server,
        size=size,
        concurrency=16,
        recipients=1,
        msgs_per_s=msgs,
        deliveries_per_s=msgs,
        p50_ms=p50,
        p99_ms=p99,
        cpu_per_1000=cpu,
        rss_mib=rss,
        tree_rss_mib=tree,
        arrived=arrived,
    )


def test_table_has_ratio_row_per_cell() -> None:
    cells = [
        _cell("mda", 4096, 2000.0, 1.0, 4.0, 1.5, 30.0, 30.0),
        _cell("dovecot", 4096, 1000.0, 2.0, 8.0, 3.0, 10.0, 120.0),
        _cell("dovecot", 102400, 500.0, 3.0, 9.0, 4.0, 11.0, 130.0, arrived=False),
    ]
    rows = report.table_rows(cells)
    assert [r[3] for r in rows] == ["mda", "dovecot", "mda/dovecot", "dovecot"]
    ratio = rows[2]
    assert ratio[:3] == ["4 KiB", "16", "1"]
    assert ratio[4] == "2.00" and ratio[7] == "0.50" and ratio[8] == "0.50" and ratio[9] == "3.00"
    assert ratio[10] == "0.25"
    assert rows[3][0] == "100 KiB" and rows[3][-1] == "NO"
    text = report.format_text(rows)
    assert text.splitlines()[0].split()[:4] == ["size", "conc", "rcpt", "server"]
    assert len(text.splitlines()) == 2 + len(rows)
    md = report.format_markdown(rows)
    assert md.splitlines()[0].startswith("| size | conc |") and md.count("\n") == 1 + len(rows)


def test_sizes_and_bodies() -> None:
    assert report.human_size(4096) == "4 KiB" and report.human_size(1 << 20) == "1 MiB"
    assert report.human_size(1000) == "1000 B"
    assert run.parse_size("4K") == 4096 and run.parse_size("1M") == 1 << 20 and run.parse_size("25MiB") == 25 << 20
    for size in (0, 1, 2, 79, 80, 81, 4096, 102400):
        body = latency.make_body(size)
        assert len(body) == max(size, 2 if size else 0)
        assert body.count(b"\r") == body.count(b"\r\n") == body.count(b"\n")
        assert not body.startswith(b".")


def test_recipients_match_smtp_source() -> None:
    assert latency.recipients_for(3, "bench.test") == ["3user@bench.test", "2user@bench.test", "user@bench.test"]
    assert latency.recipients_for(1, "bench.test") == ["user@bench.test"]


def test_quick_grid() -> None:
    args = run.build_parser().parse_args(["--quick"])
    assert run.grid(args) == [(4096, 16, 1), (102400, 16, 1)]
    assert len(run.grid(run.build_parser().parse_args([]))) == 18


def _servers() -> str:
    mda_server = importlib.import_module("mda_server")
    return "mda,dovecot" if mda_server.mda_available() else "dovecot"


@pytest.mark.slow
def test_quick_benchmark_runs_and_every_message_arrives(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the benchmark needs root (private Dovecot instance, mail user)")
    servers = _servers()
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--servers", servers, "--markdown", str(md)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every message arrived" in out
    header = next(line for line in out.splitlines() if line.startswith("size"))
    assert header.split()[:4] == ["size", "conc", "rcpt", "server"]
    for name in servers.split(","):
        rows = [line for line in out.splitlines() if f"  {name}  " in line]
        assert len(rows) == 2, out
        assert all(line.split()[-1] == "yes" for line in rows)
    text = md.read_text()
    assert "dovecot version" in text and "| size | conc |" in text


corpus = importlib.import_module("corpus")


@pytest.mark.parametrize("kind", corpus.DATA_KINDS)
def test_corpus_wire_reads_back_as_the_message(kind: str) -> None:
    """Each content kind is a parseable message whose DATA payload mda's reader turns back into it."""
    import asyncio
    import email

    from mda.dataread import read_data
    from mda.spool import Spool

    message = corpus.message(kind, 100 * 1024)
    assert abs(len(message) - 100 * 1024) < 2048
    parsed = email.message_from_bytes(message)
    assert parsed["Message-ID"] and not parsed.defects
    if kind in ("attachment", "multipart"):
        assert parsed.is_multipart() and any(p.get_filename() == "report.pdf" for p in parsed.walk())

    async def read() -> tuple[bytes, int]:
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(corpus.wire(kind, 100 * 1024) + b"QUIT\r\n")
        reader.feed_eof()
        with Spool() as spool:
            result = await read_data(reader, spool, max_size=10**9, normalize_bare=kind == "bare-lf")
            assert await reader.read() == b"QUIT\r\n"
            return spool.read_all(), result.bare_newlines

    stored, bare = asyncio.run(read())
    assert stored == message
    assert (bare > 0) == (kind == "bare-lf")
