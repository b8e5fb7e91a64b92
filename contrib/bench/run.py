#!/usr/bin/env python3
"""Benchmark mda against Dovecot's LMTP server on this machine, at the same durability.

    python contrib/bench/run.py [--quick] [--servers mda,dovecot] [--reps N] [--markdown FILE]
    python contrib/bench/run.py --content filler,prose,multipart --sizes 100K --concurrency 16 --rcpts 1
    python contrib/bench/run.py --rss-check

See contrib/bench/README.md for what every column means.  Each run starts a
fresh server on an empty mail root (so peak RSS and CPU belong to that run
alone), drives it with smtp-source for throughput and CPU, then with the
pipelining latency client for p50/p99, counts the stored files, and stops it.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import content
from disk import durable_writes_per_s
from dovecot import Dovecot
from latency import run_latency
from load import run_smtp_source, smtp_source_command
from machine import describe, load_average
from mda_server import Mda, mda_available
from packages import ensure_packages
from procstat import MemorySampler, tree_cpu_seconds
from report import (
    CellResult,
    Measures,
    check_arrived,
    count_delivered,
    format_markdown,
    format_text,
    human_size,
    median,
    percentile,
    table_rows,
)
from servers import Server

KIB, MIB = 1 << 10, 1 << 20
FULL_SIZES = [4 * KIB, 100 * KIB, 1 * MIB]
FULL_CONCURRENCY = [1, 4, 16]
FULL_RCPTS = [1, 5]
QUICK_CELLS = [(4 * KIB, 16, 1), (100 * KIB, 16, 1)]
Cell = tuple[str, int, int, int]
"""content kind, message size, concurrency, recipients per message"""
RSS_MESSAGE = 25 * MIB
RSS_ALLOWANCE = 64 * MIB  # the target: per process <= 64 MiB + largest message
DOMAIN = "bench.test"


def parse_size(text: str) -> int:
    """'4K', '100K', '1M', '4096' -> bytes (powers of 1024, as mda's config reads them)."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = {"K": KIB, "M": MIB, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text[:-1] if factor != 1 else text) * factor)


def default_messages(size: int, concurrency: int, rcpts: int) -> int:
    """Messages per throughput run: a few seconds of work per cell on a fsync-bound disk."""
    n = 2000 if size <= 8 * KIB else 1000 if size <= 128 * KIB else 300
    if concurrency == 1:
        n //= 2
    if rcpts > 1:
        n //= 2
    return max(n, 50)


@dataclass
class RunResult(Measures):
    """One server, one cell, one repetition."""

    source_cpu_per_1000: float = math.nan
    """smtp-source's own CPU seconds per 1000 messages (printed per run)."""


RETIRED = "retired"
"""Under the work directory: the mail of finished runs, deleted at the end of the invocation."""
FREE_SPACE_FLOOR = 8 << 30
INODE_RECENCY_SECONDS = 361.0
"""ext4 without a journal does not reuse an inode freed in the last 60 seconds (360 while its inode
table block is not yet written back), and to allocate one it inspects every such inode of the block
group from the start: a run started after thousands of files were deleted nearby paid up to a fifth of
its server CPU for that scan (``recently_deleted`` in a ``perf`` profile), whichever server it was."""


def retire_mail(mail_root: str) -> None:
    """Move the mail of a finished run aside instead of deleting it (see INODE_RECENCY_SECONDS); when
    the disk runs low, delete what was set aside and wait out the inode recency window."""
    if not os.path.isdir(mail_root):
        return
    retired = os.path.join(os.path.dirname(mail_root), RETIRED)
    os.makedirs(retired, exist_ok=True)
    for entry in os.scandir(mail_root):
        os.rename(entry.path, os.path.join(retired, f"{time.monotonic_ns()}-{entry.name}"))
    if shutil.disk_usage(mail_root).free < FREE_SPACE_FLOOR:
        log(f"  free space below {human_size(FREE_SPACE_FLOOR)}: deleting finished runs' mail")
        shutil.rmtree(retired, ignore_errors=True)
        time.sleep(INODE_RECENCY_SECONDS)


def log(msg: str) -> None:
    print(msg, flush=True)


def run_once(
    server: Server,
    cell: Cell,
    messages: int,
    latency_messages: int,
    reuse: bool,
    verbose: bool,
    work: str,
) -> RunResult:
    """Start the server, warm it up, measure throughput/CPU, then latency, check arrivals, stop it.

    The warm-up (two messages per connection) lets each server fork its
    processes, open its mailboxes and fill its caches first, so that a short
    run measures the steady state rather than start-up.  Nothing is deleted
    while a server runs (it may cache that a Maildir exists): arrivals are
    checked as the growth of the file count.  A corpus kind is sent by both
    clients as the same bytes: smtp-source reads it from a file in `work`.
    """
    kind, size, conc, rcpts = cell
    message_file = None if kind == content.FILLER else content.write_source_file(work, kind, size)
    payload = None if kind == content.FILLER else content.data_payload(kind, size)
    res = RunResult()
    retire_mail(server.mail_root)
    server.start()
    sampler = MemorySampler(server.root_pids()).start()
    try:
        warm = run_latency(server.host, server.port, 2 * conc, conc, size, rcpts, DOMAIN, payload)
        if warm.errors:
            res.notes.append("warm-up: " + "; ".join(warm.errors[:3]))
        if verbose:
            log(
                "    "
                + " ".join(
                    smtp_source_command(
                        server.host, server.port, messages, conc, size, rcpts, DOMAIN, reuse, message_file
                    )
                )
            )
        before = count_delivered(server.mail_root)
        cpu0 = tree_cpu_seconds(server.root_pids())
        load = run_smtp_source(server.host, server.port, messages, conc, size, rcpts, DOMAIN, reuse, message_file)
        cpu1 = tree_cpu_seconds(server.root_pids())
        found = count_delivered(server.mail_root) - before
        if load.returncode != 0:
            res.notes.append(f"smtp-source exit {load.returncode}: {load.output[-300:]}")
        if found != messages * rcpts:
            res.notes.append(f"throughput run: {found} files stored, {messages * rcpts} expected")
        res.msgs_per_s = messages / load.wall
        res.deliveries_per_s = messages * rcpts / load.wall
        res.cpu_per_1000 = (cpu1 - cpu0) / messages * 1000
        res.source_cpu_per_1000 = load.cpu / messages * 1000

        if latency_messages > 0:
            before = count_delivered(server.mail_root)
            cpu0 = tree_cpu_seconds(server.root_pids())
            lat = run_latency(server.host, server.port, latency_messages, conc, size, rcpts, DOMAIN, payload)
            cpu1 = tree_cpu_seconds(server.root_pids())
            res.lat_client_cpu_per_1000 = lat.cpu / latency_messages * 1000
            res.lat_server_cpu_per_1000 = (cpu1 - cpu0) / latency_messages * 1000
            if lat.errors:
                res.notes.append("latency client: " + "; ".join(lat.errors[:3]))
            if lat.latencies:
                res.p50_ms = percentile(lat.latencies, 50) * 1000
                res.p99_ms = percentile(lat.latencies, 99) * 1000
            found = count_delivered(server.mail_root) - before
            if found != latency_messages * rcpts:
                res.notes.append(f"latency run: {found} files stored, {latency_messages * rcpts} expected")
        res.arrived = not res.notes
    finally:
        sampler.stop()
        server.stop()
        res.rss_mib = sampler.max_process_kib() / KIB
        res.tree_rss_mib = sampler.peak_total_kib / KIB
        retire_mail(server.mail_root)
    return res


def pair_ratios(candidate: Sequence[RunResult], reference: Sequence[RunResult]) -> str:
    """mda's msgs/s over the reference's, run by run (each pair ran back to back): the spread a median
    of each server hides."""
    ratios = [c.msgs_per_s / r.msgs_per_s for c, r in zip(candidate, reference, strict=True) if r.msgs_per_s > 0]
    shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"pair ratios msgs/s: {shown} (median {median(ratios):.2f})" if ratios else "pair ratios: none"


def summarize(server: str, cell: Cell, runs: Sequence[RunResult]) -> CellResult:
    """Median of every metric over the repetitions; 'arrived' only if every run delivered everything."""
    kind, size, conc, rcpts = cell
    return CellResult(
        server=server,
        content=kind,
        size=size,
        concurrency=conc,
        recipients=rcpts,
        msgs_per_s=median(r.msgs_per_s for r in runs),
        deliveries_per_s=median(r.deliveries_per_s for r in runs),
        p50_ms=median(r.p50_ms for r in runs),
        p99_ms=median(r.p99_ms for r in runs),
        cpu_per_1000=median(r.cpu_per_1000 for r in runs),
        rss_mib=median(r.rss_mib for r in runs),
        tree_rss_mib=median(r.tree_rss_mib for r in runs),
        lat_client_cpu_per_1000=median(r.lat_client_cpu_per_1000 for r in runs),
        lat_server_cpu_per_1000=median(r.lat_server_cpu_per_1000 for r in runs),
        arrived=all(r.arrived for r in runs),
        runs=len(runs),
        notes=[n for r in runs for n in r.notes],
    )


def make_servers(
    names: Sequence[str],
    base: str,
    mda_workers: str | None,
    baseline: str | None = None,
    baseline_workers: str | None = None,
) -> dict[str, Callable[[], Server]]:
    """Factories: one fresh server object per run, all on one mail root on the same disk. ``baseline``:
    another checkout of mda (or this one), run as the server ``baseline`` with the same configuration
    but for ``baseline_workers`` when given."""
    mail_root = os.path.join(base, "mail")
    factories: dict[str, Callable[[], Server]] = {}
    for name in names:
        if name == "dovecot":
            os.makedirs(os.path.join(base, "dovecot"), exist_ok=True)
            factories[name] = lambda: Dovecot(os.path.join(base, "dovecot"), mail_root)
        elif name == "mda":
            factories[name] = lambda: Mda(os.path.join(base, "mda"), mail_root, workers=mda_workers)
        elif name == "baseline" and baseline is not None:
            factories[name] = lambda checkout=baseline: Mda(
                os.path.join(base, "baseline"), mail_root, workers=baseline_workers or mda_workers, repo=checkout
            )
    return factories


def choose_servers(arg: str | None) -> list[str]:
    """--servers, or both when mda is runnable yet (else Dovecot alone, said out loud)."""
    if arg is None:
        if mda_available():
            return ["mda", "dovecot"]
        log("note: `python -m mda` is not runnable in this checkout yet: benchmarking dovecot only")
        return ["dovecot"]
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("mda", "dovecot")]
    if unknown or not names:
        raise SystemExit(f"--servers: unknown server(s) {unknown}; use mda, dovecot or both")
    if "mda" in names and not mda_available():
        raise SystemExit("--servers mda: `python -m mda` is not runnable in this checkout (no mda/__main__.py)")
    return names


def machine_lines(mail_root: str, factories: dict[str, Callable[[], Server]]) -> list[tuple[str, str]]:
    versions = {name: f().version() for name, f in factories.items()}
    if "dovecot" not in versions:
        versions["dovecot"] = Dovecot(mail_root, mail_root).version()
    return describe(mail_root, {f"{k} version": v for k, v in versions.items()})


def rss_check(factories: dict[str, Callable[[], Server]], messages: int, concurrency: int) -> bool:
    """16 concurrent 25 MiB messages: every process must stay within 64 MiB + the message size."""
    limit_mib = (RSS_ALLOWANCE + RSS_MESSAGE) / MIB
    ok_all = True
    log(
        f"RSS check: {messages} messages of {human_size(RSS_MESSAGE)} at concurrency {concurrency}, "
        f"limit per process {limit_mib:.0f} MiB"
    )
    for name, factory in factories.items():
        server = factory()
        retire_mail(server.mail_root)
        server.start()
        sampler = MemorySampler(server.root_pids(), interval=0.02).start()
        try:
            lat = run_latency(server.host, server.port, messages, concurrency, RSS_MESSAGE, 1, DOMAIN)
        finally:
            sampler.stop()
            server.stop()
        arrived, found, expected = check_arrived(server.mail_root, messages, 1)
        retire_mail(server.mail_root)
        pid, pname, kib = sampler.largest()
        ok = kib / KIB <= limit_mib and arrived and not lat.errors
        ok_all = ok_all and ok
        log(
            f"  {name}: largest process {pname} (pid {pid}) peak RSS {kib / KIB:.1f} MiB; "
            f"tree peak {sampler.peak_total_kib / KIB:.1f} MiB; {len(sampler.peak_kib)} processes; "
            f"stored {found}/{expected}; p99 {percentile(lat.latencies, 99) * 1000:.0f} ms; "
            f"{'PASS' if ok else 'FAIL'}" + (f"; errors: {lat.errors[:2]}" if lat.errors else "")
        )
    return ok_all


def write_markdown(
    path: str,
    title: str,
    machine: list[tuple[str, str]],
    disk: dict[int, float],
    command: str,
    settings: list[str],
    table: str,
    notes: list[str],
) -> None:
    """RESULTS.md-style report: what ran, on what, and the numbers."""
    lines = [f"# {title}", "", f"Command: `{command}`", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine]
    lines += ["", "## Settings", ""] + [f"- {s}" for s in settings]
    if disk:
        lines += ["", "## Disk durable-write limit (4 KiB file: write, fsync, rename into new/, fsync new/)", ""]
        lines += [f"- {t} thread{'s' if t > 1 else ''}: {v:.0f} msgs/s" for t, v in sorted(disk.items())]
    lines += [
        "",
        "## Results (median over repetitions)",
        "",
        table,
        "",
        "msgs/s and deliv/s from smtp-source; p50/p99 from the latency client; CPU of the server's "
        "process tree per 1000 messages; peak RSS of its largest process and of the whole tree. "
        "In a `mda/dovecot` row: ratios (above 1 better for msgs/s, below 1 better for the others). "
        "See README.md.",
        "",
    ]
    if notes:
        lines += ["## Problems", ""] + [f"- {n}" for n in notes] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 4 KiB and 100 KiB at c=16, 1 rcpt, 1 rep, a few hundred messages",
    )
    p.add_argument(
        "--servers", help="comma list of mda,dovecot (default: both, or dovecot alone while mda is not runnable)"
    )
    p.add_argument("--reps", type=int, help="repetitions per cell, median reported (default 3; quick 1)")
    p.add_argument("--sizes", help="message sizes, e.g. 4K,100K,1M (default: the full grid)")
    p.add_argument("--concurrency", help="concurrent connections, e.g. 1,4,16")
    p.add_argument("--rcpts", help="recipients per message, e.g. 1,5")
    p.add_argument(
        "--content",
        default=content.FILLER,
        help=f"message content kinds, comma list of {','.join(content.KINDS)} (default: filler, smtp-source's own)",
    )
    p.add_argument(
        "--cell",
        action="append",
        metavar="KIND:SIZE:CONC[:RCPT]",
        help="run this cell (repeatable, e.g. --cell prose:100K:16 --cell multipart:1M:8) instead of a grid",
    )
    p.add_argument("--messages", type=int, help="messages per throughput run (default: by cell)")
    p.add_argument(
        "--latency-messages", type=int, help="messages per latency run (default: min(messages, 500); 0 skips latency)"
    )
    p.add_argument("--reconnect", action="store_true", help="smtp-source without -d: one connection per message")
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run mda from the checkout DIR (server `baseline`), alternating, and print mda/baseline",
    )
    p.add_argument("--mda-workers", help="mda's `workers` setting (default: not set, mda's default)")
    p.add_argument(
        "--baseline-workers",
        help="the baseline's `workers` setting (default: --mda-workers); with `--baseline .` an A/B of two settings",
    )
    p.add_argument("--disk-seconds", type=float, help="duration of each disk-limit test (default 3; quick 1; 0 skips)")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown to FILE")
    p.add_argument("--title", default="mda vs Dovecot LMTP benchmark", help="heading of the Markdown report")
    p.add_argument(
        "--rss-check",
        action="store_true",
        help="only the memory check: 25 MiB messages at concurrency 16 via the latency client",
    )
    p.add_argument("--rss-messages", type=int, default=32, help="messages in --rss-check (default 32)")
    p.add_argument(
        "--base",
        default="/var/tmp",
        help="parent of the mda-bench-RANDOM work directory (its filesystem is the one measured)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each smtp-source command")
    return p


def parse_cell(text: str) -> Cell:
    """'multipart:1M:8' -> ('multipart', 1048576, 8, 1); 'prose:100K:16:5' -> 5 recipients."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"cell {text!r}: expected KIND:SIZE:CONC[:RCPT]")
    kind = content.check_kinds(parts[0])
    if len(kind) != 1:
        raise ValueError(f"cell {text!r}: one content kind per cell")
    try:
        return kind[0], parse_size(parts[1]), int(parts[2]), int(parts[3]) if len(parts) == 4 else 1
    except ValueError:
        raise ValueError(f"cell {text!r}: SIZE like 4K or 1M, CONC and RCPT numbers") from None


def grid(args: argparse.Namespace) -> list[Cell]:
    """The cells to run: those given with --cell, else every content kind × size × concurrency × recipients."""
    if args.cell:
        if args.sizes or args.concurrency or args.rcpts or args.content != content.FILLER:
            raise SystemExit("--cell names whole cells: not with --sizes, --concurrency, --rcpts or --content")
        try:
            return [parse_cell(c) for c in args.cell]
        except ValueError as e:
            raise SystemExit(f"--cell: {e}") from None
    try:
        kinds = content.check_kinds(args.content)
    except ValueError as e:
        raise SystemExit(f"--content: {e}") from None
    if args.quick and not (args.sizes or args.concurrency or args.rcpts):
        return [(k, s, c, r) for k in kinds for s, c, r in QUICK_CELLS]
    sizes = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else FULL_SIZES
    concs = [int(c) for c in args.concurrency.split(",")] if args.concurrency else FULL_CONCURRENCY
    rcpts = [int(r) for r in args.rcpts.split(",")] if args.rcpts else FULL_RCPTS
    return [(k, s, c, r) for k in kinds for s in sizes for c in concs for r in rcpts]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: Dovecot's private instance needs to switch to the mail user")
    names = choose_servers(args.servers)
    if args.baseline:
        if "mda" not in names:
            raise SystemExit("--baseline compares with mda: --servers must include mda")
        names.insert(names.index("mda") + 1, "baseline")
    ensure_packages(need_dovecot=True)  # dovecot --version goes into the machine description
    reps = args.reps or (1 if args.quick else 3)
    disk_seconds = args.disk_seconds if args.disk_seconds is not None else (1.0 if args.quick else 3.0)

    base = tempfile.mkdtemp(prefix="mda-bench-", dir=args.base)
    os.chmod(base, 0o755)  # Dovecot's mail processes (vmail) must traverse it
    factories = make_servers(names, base, args.mda_workers, args.baseline, args.baseline_workers)
    command = "python contrib/bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        machine = machine_lines(base, factories)
        for k, v in machine:
            log(f"{k}: {v}")
        if args.rss_check:
            return 0 if rss_check(factories, args.rss_messages, 16) else 1

        disk: dict[int, float] = {}
        if disk_seconds > 0:
            for threads in (1, 16):
                disk[threads] = durable_writes_per_s(base, threads, disk_seconds)
                log(
                    f"disk limit, {threads} thread{'s' if threads > 1 else ''}: {disk[threads]:.0f} msgs/s "
                    "(4 KiB, fsync file + rename + fsync dir)"
                )

        cells = grid(args)
        results: list[CellResult] = []
        started = time.monotonic()
        for cell in cells:
            kind, size, conc, rcpts = cell
            messages = args.messages or (300 if args.quick else default_messages(size, conc, rcpts))
            lat_messages = (
                args.latency_messages
                if args.latency_messages is not None
                else min(messages, 200 if args.quick else 500)
            )
            runs: dict[str, list[RunResult]] = {n: [] for n in names}
            for rep in range(reps):
                for name in names:  # alternate servers run by run: mda, dovecot, mda, dovecot...
                    r = run_once(
                        factories[name](), cell, messages, lat_messages, not args.reconnect, args.verbose, base
                    )
                    runs[name].append(r)
                    log(
                        f"  {kind} {human_size(size)} c={conc} rcpt={rcpts} rep {rep + 1}/{reps} {name}: "
                        f"{r.msgs_per_s:.1f} msgs/s, p99 {r.p99_ms:.2f} ms, CPU {r.cpu_per_1000:.2f} s/1k "
                        f"(smtp-source {r.source_cpu_per_1000:.2f}; latency run: server "
                        f"{r.lat_server_cpu_per_1000:.2f}, client {r.lat_client_cpu_per_1000:.2f}), "
                        f"RSS {r.rss_mib:.1f} MiB, arrived {'yes' if r.arrived else 'NO'}"
                        + ("".join(f"\n    ! {n}" for n in r.notes))
                    )
            results += [summarize(n, cell, runs[n]) for n in names]
            for reference in ("dovecot", "baseline"):
                if "mda" in runs and reference in runs:
                    pairs = pair_ratios(runs["mda"], runs[reference])
                    log(f"  {kind} {human_size(size)} c={conc} rcpt={rcpts} mda/{reference} {pairs}")
        rows = table_rows(results)
        log(f"\nResults (median of {reps} rep{'s' if reps > 1 else ''}; {time.monotonic() - started:.0f} s):")
        log(format_text(rows))
        if args.baseline:
            ratios = table_rows(results, reference="baseline", candidate="mda")
            log("\nmda against the baseline checkout:")
            log(format_text([row for row in ratios if row[4] == "mda/baseline"]))
        notes = [
            f"{r.content} {human_size(r.size)} c={r.concurrency} rcpt={r.recipients} {r.server}: {n}"
            for r in results
            for n in r.notes
        ]
        all_arrived = all(r.arrived for r in results)
        log("every message arrived" if all_arrived else "SOME MESSAGES DID NOT ARRIVE (see the notes above)")
        if args.markdown:
            settings = [
                f"servers: {', '.join(names)} (alternating run by run), {reps} repetition(s) per cell",
                "load: smtp-source -L "
                + ("(one connection per message)" if args.reconnect else "-d (connections reused)"),
                "messages per run: "
                + (str(args.messages) if args.messages else ("300" if args.quick else "by cell (see README.md)")),
                "content: "
                + (", ".join(sorted({c[0] for c in cells})))
                + " (filler: smtp-source -l; corpus kinds: smtp-source -F, "
                "the latency client sends the same bytes)",
                "durability: mda storage.fsync true; Dovecot mail_fsync = always",
                f"load average at end (1/5/15 min): {load_average()}",
            ]
            if "mda" in names:
                settings.append(f"mda workers: {args.mda_workers or 'not set (default: auto)'}")
            write_markdown(args.markdown, args.title, machine, disk, command, settings, format_markdown(rows), notes)
            log(f"wrote {args.markdown}")
        return 0 if all_arrived else 1
    finally:
        if args.keep:
            log(f"work directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
