"""In-process cost of Sieve per message: one LMTP delivery (policy resolution, the Sieve plan, a Maildir
store without fsync on /dev/shm) timed in CPU microseconds without Sieve and with the two 20-rule
scripts of sieve_overhead.py, none of whose rules match.

Without sockets, sessions and disk waits, this isolates what Sieve adds to one delivery, and it
compares checkouts side by side: ``--checkout A --checkout B`` runs each in its own process,
alternating round by round, and prints each one's median µs per message and what Sieve adds.

Usage: python contrib/bench/sieve_cost.py [--checkout PATH ...] [--messages 1000] [--rounds 4]
       [--message bench|real] [--sieve-only | --no-sieve]
``--no-sieve`` times the delivery without Sieve alone (policy, spool, Maildir store), for an A/B of
the storage path.
``--sieve-only`` times only what a delivery calls Sieve for (``filtering.compile_scripts`` and
``mda.sieve.run`` on the message with a trace block): a change of a few µs there is lost in the
±30 µs that one process's whole delivery varies by from another's on a shared machine.
``bench`` is latency.py's 4 KiB message (five header fields, lines of X); ``real`` a 4 KiB message with
the header fields a list message carries (Received, DKIM-Signature, display names, List-Unsubscribe).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def message(kind: str, seq: int) -> bytes:
    """One 4 KiB message with LF line ends, as the spool holds it."""
    from latency import make_body

    if kind == "bench":
        head = (
            "From: <sender@bench.test>\nTo: <user@bench.test>\nDate: Wed, 02 Dec 2026 07:00:00 -0000\n"
            f"Message-Id: <bench.{seq}@bench.test>\nSubject: bench {seq}\n\n"
        ).encode()
        return head + make_body(4096).replace(b"\r\n", b"\n")
    head = (
        "Received: from mx.example.net (mx.example.net [192.0.2.7])\n\tby mail.example.org with ESMTPS id 4Q2x\n"
        "\tfor <user@bench.test>; Wed, 02 Dec 2026 07:00:00 +0000\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=sel;\n"
        "\th=from:to:subject:date:message-id; bh=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=;\n"
        "\tb=" + "Q" * 300 + "\n"
        'From: "Alice Example" <alice@example.net>\nTo: Bob <user@bench.test>, carol@example.org\n'
        "Cc: team@example.org\nDate: Wed, 02 Dec 2026 07:00:00 +0000\n"
        f"Message-ID: <msg.{seq}@example.net>\nSubject: Re: quarterly numbers for the meeting {seq}\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nX-Spam-Score: 1.2\n"
        "List-Unsubscribe: <mailto:unsub@example.org>\n\n"
    ).encode()
    body = b"Some prose line of a realistic message, nothing special in it at all.\n" * 60
    return head + body[: 4096 - len(head)]


def sieve_worker(kind: str, messages: int) -> dict[str, float]:
    """In the checkout on sys.path: µs of CPU per message for compiling (cached) and running each script."""
    from sieve_overhead import SCRIPTS

    from mda import config, filtering
    from mda.addresses import parse_mailbox
    from mda.policy import Policy
    from mda.sieve import SieveEnvelope, run

    trace = b"Return-Path: <sender@bench.test>\nDelivered-To: user@bench.test\n"
    data = [trace + message(kind, seq) for seq in range(50)]
    envelope = SieveEnvelope("sender@bench.test", "user@bench.test")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mda-sieve-cost-", dir="/dev/shm") as directory:
        for name, script in SCRIPTS.items():
            mail = Path(directory) / name / "mail"
            (mail / "bench.test" / "user").mkdir(parents=True)
            (mail / "bench.test" / "user" / "active.sieve").write_text(script)
            (mail.parent / "mda.yaml").write_text(
                "hostname: bench.test\ndomains: {bench.test: {any_user: true}}\n"
                f'storage: {{format: maildir, path: "{mail}/{{domain}}/{{user}}/Maildir"}}\n'
                'sieve: {path: "{home}/active.sieve"}\n'
            )
            loaded = config.load(mail.parent / "mda.yaml")
            mailbox = Policy(loaded).resolve(parse_mailbox("user@bench.test")).mailboxes[0]
            best = float("inf")
            for repeat in range(4):  # the first warms up
                start = time.process_time()
                for seq in range(messages):
                    scripts = filtering.compile_scripts(loaded, mailbox)[1]
                    run(scripts, data[seq % 50], envelope)
                if repeat:
                    best = min(best, (time.process_time() - start) / messages * 1e6)
            times[name] = best
    return times


def worker(kind: str, messages: int, sieve: bool = True) -> dict[str, float]:
    """In the checkout on sys.path: µs of CPU per delivery for each variant, in rotating order."""
    from sieve_overhead import SCRIPTS

    from mda import config
    from mda.addresses import parse_mailbox
    from mda.dataread import DataResult
    from mda.delivery import LMTP, deliver_transaction
    from mda.policy import Policy
    from mda.spool import Spool
    from mda.trace import TraceInfo
    from mda.transaction import Recipient, Transaction

    def setup(base: Path, script: str | None) -> tuple[Any, Any]:
        base.mkdir(parents=True)
        mail = base / "mail"
        text = (
            "hostname: bench.test\ndomains: {bench.test: {any_user: true}}\n"
            f'storage: {{format: maildir, path: "{mail}/{{domain}}/{{user}}/Maildir", fsync: false}}\n'
        )
        if script is not None:
            text += 'sieve: {path: "{home}/active.sieve"}\n'
            (mail / "bench.test" / "user").mkdir(parents=True)
            (mail / "bench.test" / "user" / "active.sieve").write_text(script)
        (base / "mda.yaml").write_text(text)
        loaded = config.load(base / "mda.yaml")
        return loaded, Policy(loaded)

    def deliver(setting: tuple[Any, Any], seq: int, data: bytes) -> None:
        loaded, policy = setting
        resolution = policy.resolve(parse_mailbox("user@bench.test"))
        trace = TraceInfo("sender@bench.test", "client", "127.0.0.1", "bench.test", "LMTP", f"Q{seq}", time.time())
        txn = Transaction(f"Q{seq}", "sender@bench.test", [Recipient(resolution)], trace)
        with Spool() as spool:
            spool.write(data)
            [outcome] = deliver_transaction(loaded, txn, spool, DataResult(size=len(data)), LMTP)
        if outcome.reply.code != 250 or outcome.sieve_errors or "fileinto" in outcome.reason:
            raise RuntimeError(f"unexpected delivery: {outcome.reply} {outcome.reason}")

    variants: dict[str, str | None] = {"none": None, **(SCRIPTS if sieve else {})}
    data = [message(kind, seq) for seq in range(50)]
    with tempfile.TemporaryDirectory(prefix="mda-sieve-cost-", dir="/dev/shm") as directory:
        settings = {name: setup(Path(directory) / name, script) for name, script in variants.items()}
        for setting in settings.values():  # warm up: compiled scripts, imports, caches
            for seq in range(200):
                deliver(setting, seq, data[seq % 50])
        times: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(3):
            names = list(variants)
            for name in names[repeat:] + names[:repeat]:
                start = time.process_time()
                for seq in range(messages):
                    deliver(settings[name], seq, data[seq % 50])
                times[name].append((time.process_time() - start) / messages * 1e6)
    return {name: min(values) for name, values in times.items()}


def ab_parser(description: str, messages: int, rounds: int, messages_help: str) -> argparse.ArgumentParser:
    """The options every checkout A/B of this directory takes: ``--checkout`` (repeat), ``--messages``,
    ``--rounds``, and the hidden ``--worker`` that ``alternate`` runs each checkout with."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkout", action="append", type=Path, help="repeat to compare (default: this one)")
    parser.add_argument("--messages", type=int, default=messages, help=messages_help)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser


def chosen_checkouts(args: argparse.Namespace) -> list[Path]:
    """The ``--checkout`` directories, or this repository."""
    return [path.resolve() for path in args.checkout or [HERE.parents[1]]]


def alternate(
    script: Path, checkouts: list[Path], rounds: int, options: list[str]
) -> dict[Path, dict[str, list[float]]]:
    """Run ``script --worker CHECKOUT OPTIONS`` for each checkout, ``rounds`` times, the order rotating
    each round; collect each checkout's JSON figures, name by name."""
    results: dict[Path, dict[str, list[float]]] = {path: {} for path in checkouts}
    for round_ in range(rounds):
        for path in checkouts[round_ % len(checkouts) :] + checkouts[: round_ % len(checkouts)]:
            command = [sys.executable, str(script.resolve()), "--worker", str(path), *options]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            for name, value in json.loads(output).items():
                results[path].setdefault(name, []).append(value)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.split("\n\n")[0], 1000, 4, "deliveries per variant and repeat")
    parser.add_argument("--message", choices=["bench", "real"], default="bench")
    parser.add_argument("--sieve-only", action="store_true", help="time compile_scripts and run alone")
    parser.add_argument("--no-sieve", action="store_true", help="time the delivery without Sieve alone")
    args = parser.parse_args(argv)
    if args.worker is not None:
        sys.path[:0] = [str(args.worker), str(HERE)]
        if args.sieve_only:
            print(json.dumps(sieve_worker(args.message, args.messages)))
        else:
            print(json.dumps(worker(args.message, args.messages, sieve=not args.no_sieve)))
        return 0
    checkouts = chosen_checkouts(args)
    options = ["--message", args.message, "--messages", str(args.messages)]
    options += ["--sieve-only"] if args.sieve_only else []
    options += ["--no-sieve"] if args.no_sieve else []
    results = alternate(Path(__file__), checkouts, args.rounds, options)
    for path, values in results.items():
        median = {name: statistics.median(v) for name, v in values.items()}
        if args.sieve_only:
            parts = ", ".join(f"{name} {value:.0f} µs" for name, value in median.items())
            print(f"{path}: Sieve (compile_scripts and run) {parts} per message")
            continue
        parts = ", ".join(f"{name} {value:.0f} µs" for name, value in median.items())
        if args.no_sieve:
            print(f"{path}: {parts} per message")
            continue
        added = ", ".join(
            f"{name} +{value - median['none']:.0f} µs" for name, value in median.items() if name != "none"
        )
        print(f"{path}: {parts} per message; Sieve adds {added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
