"""The benchmark harness in contrib/bench: its pure parts fast, the whole command as a slow test.

The numbers the benchmark prints decide performance work, so the parts that
compute them (percentiles, the table, the delivery count) are checked here
without any server, and a slow test runs the real command end to end.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "contrib" / "bench"
sys.path.insert(0, str(BENCH))

report = importlib.import_module("report")
latency = importlib.import_module("latency")
run = importlib.import_module("run")
content = importlib.import_module("content")
load = importlib.import_module("load")
corpus = importlib.import_module("corpus")


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
    assert [r[4] for r in rows] == ["mda", "dovecot", "mda/dovecot", "dovecot"]
    ratio = rows[2]
    assert ratio[:4] == ["filler", "4 KiB", "16", "1"]
    assert ratio[5] == "2.00" and ratio[8] == "0.50" and ratio[9] == "0.50" and ratio[10] == "3.00"
    assert ratio[11] == "0.25"
    assert rows[3][1] == "100 KiB" and rows[3][-1] == "NO"
    text = report.format_text(rows)
    assert text.splitlines()[0].split()[:5] == ["content", "size", "conc", "rcpt", "server"]
    assert len(text.splitlines()) == 2 + len(rows)
    md = report.format_markdown(rows)
    assert md.splitlines()[0].startswith("| content | size | conc |") and md.count("\n") == 1 + len(rows)


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
    assert run.grid(args) == [("filler", 4096, 16, 1), ("filler", 102400, 16, 1)]
    assert len(run.grid(run.build_parser().parse_args([]))) == 18


def test_content_multiplies_the_grid_and_unknown_kinds_stop_the_run() -> None:
    args = run.build_parser().parse_args(["--content", "prose,multipart", "--sizes", "100K,1M", "--concurrency", "8"])
    assert run.grid(args) == [
        ("prose", 102400, 8, 1),
        ("prose", 102400, 8, 5),
        ("prose", 1 << 20, 8, 1),
        ("prose", 1 << 20, 8, 5),
        ("multipart", 102400, 8, 1),
        ("multipart", 102400, 8, 5),
        ("multipart", 1 << 20, 8, 1),
        ("multipart", 1 << 20, 8, 5),
    ]
    quick = run.build_parser().parse_args(["--quick", "--content", "html"])
    assert run.grid(quick) == [("html", 4096, 16, 1), ("html", 102400, 16, 1)]
    for bad in ("prose,bogus", "long-lines", ","):
        with pytest.raises(SystemExit):
            run.grid(run.build_parser().parse_args(["--content", bad]))


def test_cells_given_one_by_one() -> None:
    args = run.build_parser().parse_args(["--cell", "filler:4K:16", "--cell", "multipart:1M:8:5"])
    assert run.grid(args) == [("filler", 4096, 16, 1), ("multipart", 1 << 20, 8, 5)]
    for bad in (
        ["--cell", "bogus:4K:16"],
        ["--cell", "prose:4K"],
        ["--cell", "prose,html:4K:16"],
        ["--cell", "prose:big:16"],
        ["--cell", "prose:4K:16", "--sizes", "4K"],
        ["--cell", "prose:4K:16", "--content", "html"],
    ):
        with pytest.raises(SystemExit):
            run.grid(run.build_parser().parse_args(bad))


def test_table_reports_each_content_kind_with_its_own_ratio_row() -> None:
    cells = [
        report.CellResult(server=server, content=kind, size=102400, concurrency=16, recipients=1, msgs_per_s=rate)
        for kind in ("filler", "prose")
        for server, rate in (("mda", 300.0 if kind == "filler" else 150.0), ("dovecot", 200.0))
    ]
    cells[0].lat_client_cpu_per_1000, cells[0].lat_server_cpu_per_1000 = 0.4, 2.5
    rows = report.table_rows(cells)
    assert [(r[0], r[4], r[5]) for r in rows] == [
        ("filler", "mda", "300.0"),
        ("filler", "dovecot", "200.0"),
        ("filler", "mda/dovecot", "1.50"),
        ("prose", "mda", "150.0"),
        ("prose", "dovecot", "200.0"),
        ("prose", "mda/dovecot", "0.75"),
    ]
    client, server = report.HEADERS.index("lat client CPU s/1k"), report.HEADERS.index("lat server CPU s/1k")
    assert (rows[0][client], rows[0][server]) == ("0.40", "2.50")
    assert rows[2][client] == rows[2][server] == "-"


def test_smtp_source_sends_the_file_instead_of_filler() -> None:
    cmd = load.smtp_source_command("127.0.0.1", 2525, 10, 4, 102400, 1, message_file="/tmp/m.eml")
    assert cmd[cmd.index("-F") + 1] == "/tmp/m.eml" and "-l" not in cmd
    cmd = load.smtp_source_command("127.0.0.1", 2525, 10, 4, 102400, 1)
    assert cmd[cmd.index("-l") + 1] == "102400" and "-F" not in cmd


@pytest.mark.parametrize("kind", content.KINDS[1:])
def test_file_for_smtp_source_and_latency_payload_carry_the_same_message(kind: str, tmp_path: Path) -> None:
    """The -F file is the corpus message; the latency client's payload is what smtp-source makes of it."""
    path = content.write_source_file(str(tmp_path), kind, 100 * 1024)
    assert Path(path).read_bytes() == corpus.message(kind, 100 * 1024)
    payload = content.data_payload(kind, 100 * 1024)
    assert payload.endswith(b"\r\n\r\n.\r\n")  # smtp-source's empty last line, then the end marker
    lines = payload[: -len(b".\r\n")].split(b"\r\n")[:-1]
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    unstuffed = b"".join((line[1:] if line.startswith(b".") else line) + b"\n" for line in lines)
    assert unstuffed == content.stored_body(kind, 100 * 1024)
    if kind == "prose":
        assert b"\r\n..." in payload  # prose has lines starting with a period: they are stuffed


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
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--content",
            "filler,prose",
            "--servers",
            servers,
            "--markdown",
            str(md),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every message arrived" in out
    header = next(line for line in out.splitlines() if line.startswith("content"))
    assert header.split()[:5] == ["content", "size", "conc", "rcpt", "server"]
    for name in servers.split(","):
        rows = [line for line in out.splitlines() if f"  {name}  " in line]
        assert len(rows) == 4, out
        assert all(line.split()[-1] == "yes" for line in rows)
        assert sorted(line.split()[0] for line in rows) == ["filler", "filler", "prose", "prose"]
    text = md.read_text()
    assert "dovecot version" in text and "| content | size | conc |" in text


@pytest.mark.parametrize("kind", corpus.DATA_KINDS)
def test_corpus_wire_reads_back_as_the_message(kind: str) -> None:
    """Each content kind is a parseable message whose DATA payload mda's decoder turns back into it."""
    import email

    from mda.session.data import DotDecoder, MessageSink
    from mda.spool import Spool

    message = corpus.message(kind, 100 * 1024)
    assert abs(len(message) - 100 * 1024) < 2048
    parsed = email.message_from_bytes(message)
    assert parsed["Message-ID"] and not parsed.defects
    if kind in ("attachment", "multipart"):
        assert parsed.is_multipart() and any(p.get_filename() == "report.pdf" for p in parsed.walk())

    wire = corpus.wire(kind, 100 * 1024) + b"QUIT\r\n"
    with Spool() as spool:
        sink = MessageSink(spool, max_size=10**9, normalize_bare=kind == "bare-lf", max_header_size=None)
        decoder = DotDecoder(sink)
        used = decoder.feed(wire)
        assert used is not None and wire[used:] == b"QUIT\r\n"
        bare = decoder.finish().bare_newlines
        stored = spool.read_all()
    assert stored == message
    assert (bare > 0) == (kind == "bare-lf")


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory Dovecot's mail processes (vmail) can traverse, as the benchmark's own."""
    path = tempfile.mkdtemp(prefix="mda-bench-test-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


TRACE = (b"Return-Path:", b"Delivered-To:", b"Received:", b"\t", b" ")


@pytest.mark.root
@pytest.mark.parametrize("server_name", ["mda", "dovecot"])
def test_both_clients_deliver_the_corpus_message_byte_for_byte(server_name: str, work: Path) -> None:
    """smtp-source -F and the latency client store the same bytes: the server's trace headers, then
    content.stored_body (read back from the Maildir files, not trusted from the 250 replies)."""
    if server_name == "mda":
        assert importlib.import_module("mda_server").mda_available(), "python -m mda must run in this checkout"
    importlib.import_module("packages").ensure_packages(need_dovecot=server_name == "dovecot")
    server = run.make_servers([server_name], str(work), "1")[server_name]()
    kind, size = "multipart", 100 * 1024
    server.start()
    try:
        source = load.run_smtp_source(
            server.host, server.port, 2, 1, size, 1, message_file=content.write_source_file(str(work), kind, size)
        )
        assert source.returncode == 0, source.output
        lat = latency.run_latency(server.host, server.port, 2, 1, size, payload=content.data_payload(kind, size))
        assert not lat.errors and len(lat.latencies) == 2
    finally:
        server.stop()
    stored = sorted((work / "mail" / "bench.test" / "user" / "Maildir").glob("*/*"))
    assert len(stored) == 4
    expected = content.stored_body(kind, size)
    for path in stored:
        data = path.read_bytes()
        assert data.endswith(expected), path
        trace = data[: -len(expected)]
        assert trace.endswith(b"\n") and all(line.startswith(TRACE) for line in trace.splitlines()), trace


@pytest.mark.slow
def test_resolve_cost_benchmark_times_a_checkout() -> None:
    """contrib/bench/resolve_cost.py: µs per resolution, per in-process delivery and per metrics update,
    and the ratio to the first checkout given."""
    repo = Path(__file__).resolve().parents[1]
    script = repo / "contrib" / "bench" / "resolve_cost.py"
    command = [sys.executable, str(script), "--messages", "20", "--rounds", "2", "--checkout", str(repo)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    figures = r"resolve \d+\.\d µs, deliver \d+\.\d µs, metrics -?\d+\.\d µs \(medians of 2 rounds\)"
    pattern = rf"^{re.escape(str(repo))}: {figures}; vs the first checkout: resolve \d\.\d\d, deliver \d\.\d\d"
    assert re.match(pattern, result.stdout), result.stdout
