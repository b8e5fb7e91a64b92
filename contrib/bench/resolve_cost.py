"""In-process CPU cost of the per-delivery path outside storage: ``Policy.resolve`` for one recipient,
one whole LMTP delivery (resolution, trace block, Maildir store without fsync on /dev/shm), and the
Prometheus updates ``Reporter.delivered`` makes for it (multiprocess mode, as ``mda serve`` runs them).

``--checkout A --checkout B`` runs each checkout in its own process, alternating round by round, and
prints each one's median µs per resolution, per delivery and per metrics update, and the ratio of each
checkout to the first: an A/B in one invocation, which a shared machine needs.

Usage: python contrib/bench/resolve_cost.py [--checkout PATH ...] [--rounds 5] [--messages 2000]
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sieve_cost import ab_parser, alternate, chosen_checkouts

HERE = Path(__file__).resolve().parent


def _timed(function: Any, count: int, repeats: int = 3) -> float:
    """Best of ``repeats`` runs: µs of process CPU per call of ``function(seq)``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for seq in range(count):
            function(seq)
        best = min(best, (time.process_time() - start) / count * 1e6)
    return best


def worker(messages: int) -> dict[str, float]:
    """In the checkout on sys.path: µs of CPU per resolution, per delivery and per metrics update."""
    with tempfile.TemporaryDirectory(prefix="mda-resolve-cost-", dir="/dev/shm") as directory:
        base = Path(directory)
        (base / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(base / "metrics")  # before prometheus_client's import
        return _measure(base, messages)


def _measure(base: Path, messages: int) -> dict[str, float]:
    from sieve_cost import message

    from mda import config, logs
    from mda.addresses import parse_mailbox
    from mda.config import ListenerConfig, parse_bind
    from mda.dataread import DataResult
    from mda.delivery import LMTP, Outcome, deliver_transaction
    from mda.enums import Protocol
    from mda.metrics import Metrics
    from mda.policy import Policy
    from mda.server import Reporter
    from mda.spool import Spool
    from mda.trace import TraceInfo
    from mda.transaction import Recipient, Transaction

    data = [message("bench", seq) for seq in range(50)]
    address = parse_mailbox("user@bench.test")
    (base / "mda.yaml").write_text(
        "hostname: bench.test\ndomains: {bench.test: {any_user: true}}\n"
        f'storage: {{format: maildir, path: "{base}/mail/{{domain}}/{{user}}/Maildir", fsync: false}}\n'
    )
    loaded = config.load(base / "mda.yaml")
    policy = Policy(loaded)
    last: list[tuple[Transaction, Outcome]] = []

    def resolve(seq: int) -> None:
        policy.resolve(address)

    def deliver(seq: int) -> None:
        resolution = policy.resolve(address)
        trace = TraceInfo("sender@bench.test", "client", "127.0.0.1", "bench.test", "LMTP", f"Q{seq}", time.time())
        txn = Transaction(f"Q{seq}", "sender@bench.test", [Recipient(resolution)], trace)
        with Spool() as spool:
            spool.write(data[seq % 50])
            [outcome] = deliver_transaction(loaded, txn, spool, DataResult(size=len(data[seq % 50])), LMTP)
        if outcome.reply.code != 250:
            raise RuntimeError(f"unexpected delivery: {outcome.reply} {outcome.reason}")
        last[:] = [(txn, outcome)]

    for seq in range(300):  # warm up: imports, caches, the Maildir's directories
        deliver(seq)
    times = {"resolve": _timed(resolve, messages * 5), "deliver": _timed(deliver, messages)}

    # Reporter.delivered with and without metrics, its log line off: the difference is the metrics.
    logs.logger.setLevel(logging.ERROR)
    listener = ListenerConfig(protocol=Protocol.LMTP, bind=parse_bind("127.0.0.1:24"))
    [(txn, outcome)] = last
    size = DataResult(size=len(data[0]))
    with_metrics, without = Reporter(Metrics(None, multiprocess=True)), Reporter(None)
    times["metrics"] = _timed(
        lambda seq: with_metrics.delivered(listener, "127.0.0.1", txn, size, [outcome]), messages * 5
    ) - _timed(lambda seq: without.delivered(listener, "127.0.0.1", txn, size, [outcome]), messages * 5)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.split("\n\n")[0], 2000, 5, "deliveries per repeat (resolutions: 5 times)")
    args = parser.parse_args(argv)
    if args.worker is not None:
        sys.path[:0] = [str(args.worker), str(HERE)]
        print(json.dumps(worker(args.messages)))
        return 0
    checkouts = chosen_checkouts(args)
    results = alternate(Path(__file__), checkouts, args.rounds, ["--messages", str(args.messages)])
    first = {name: statistics.median(values) for name, values in results[checkouts[0]].items()}
    for path, values in results.items():
        median = {name: statistics.median(v) for name, v in values.items()}
        parts = ", ".join(f"{name} {value:.1f} µs" for name, value in median.items())
        ratios = ", ".join(f"{name} {value / first[name]:.2f}" for name, value in median.items() if first[name] > 0)
        print(f"{path}: {parts} (medians of {args.rounds} rounds); vs the first checkout: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
