"""Throughput of ``userdb:`` (PostgreSQL) against the same user in ``users:``.

Three ``mda serve`` processes, one per way of finding the recipient, against one private PostgreSQL
(tests/peers/postgres.py: its own cluster, port and data directory, removed afterwards):

- ``yaml``: the user in ``users:`` (no database);
- ``userdb-cached``: the user in PostgreSQL, ``userdb_cache`` at its default (answers kept 60 s), so once
  warm nearly every look-up is a cache hit;
- ``userdb-uncached``: the same source with ``userdb_cache: {ttl: 0, negative_ttl: 0}``: every RCPT
  queries PostgreSQL.

Each round starts the three afresh on empty Maildirs, warms each up with one short run, then times one
``smtp-source`` run of each (Postfix's C LMTP client: ``-d -s C -m N -l SIZE``, one recipient), the order
rotating from round to round so that a drift of the shared machine hits all three alike. Each round gives
``userdb-cached / yaml`` and ``userdb-uncached / yaml``; the medians are printed. Targets: at least 0.90
(cached) and 0.70 (uncached).

Usage (root: the private PostgreSQL runs as the ``postgres`` user):
    python contrib/bench/userdb_speed.py [--rounds 3] [--messages 1000] [--concurrency 16] [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from load import run_smtp_source  # noqa: E402
from mda_server import Mda  # noqa: E402
from packages import ensure_packages  # noqa: E402

from tests.peers.postgres import PASSWORD, PostgresServer, postgres_server  # noqa: E402

DOMAIN = "bench.test"
USER = f"user@{DOMAIN}"  # smtp-source -t user@bench.test -r 1
WAYS = ("yaml", "userdb-cached", "userdb-uncached")
TARGETS = {"userdb-cached": 0.90, "userdb-uncached": 0.70}


def _config(way: str, mail_root: Path, pg: PostgresServer, password_file: Path) -> str:
    maildir = mail_root / DOMAIN / "user" / "Maildir"
    head = (
        "hostname: bench.test\n"
        'listeners: [{protocol: lmtp, bind: "127.0.0.1:0"}]\n'
        f"domains: [{DOMAIN}]\n"
        f'storage: {{format: maildir, path: "{mail_root}/{{domain}}/{{user}}/Maildir", fsync: true}}\n'
        "log_level: warning\n"
    )
    if way == "yaml":
        return head + f'users: {{"{USER}": {{path: "{maildir}"}}}}\n'
    source = (
        f'userdb: [{{driver: sql, url: "{pg.url}", password_file: "{password_file}", path_base: "{mail_root}",'
        ' user_query: "SELECT maildir AS path FROM mailbox WHERE username = :address"}]\n'
    )
    cache = "userdb_cache: {ttl: 0, negative_ttl: 0}\n" if way == "userdb-uncached" else ""
    return head + source + cache


class Instance(Mda):
    """``contrib/bench/mda_server.Mda`` with this benchmark's configuration."""

    def __init__(self, base: Path, config: str) -> None:
        super().__init__(str(base), str(base / "mail"), config=config)

    def rate(self, messages: int, concurrency: int, size: int) -> float:
        result = run_smtp_source(self.host, self.port, messages, concurrency, size, 1, domain=DOMAIN)
        if result.returncode != 0:
            raise RuntimeError(f"smtp-source failed against {self.base}: {result.output[-500:]}")
        return messages / result.wall


def one_round(
    work: Path, number: int, pg: PostgresServer, password_file: Path, args: argparse.Namespace
) -> dict[str, float]:
    order = WAYS[number % 3 :] + WAYS[: number % 3]
    servers: dict[str, Instance] = {}
    try:
        for way in order:
            base = work / f"round{number}" / way
            (base / "mail").mkdir(parents=True)
            servers[way] = Instance(base, _config(way, base / "mail", pg, password_file))
            servers[way].start()
        for way in order:
            servers[way].rate(max(args.concurrency * 4, args.messages // 10), args.concurrency, args.size)
        return {way: servers[way].rate(args.messages, args.concurrency, args.size) for way in order}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work / f"round{number}", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000, help="messages per timed run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    ensure_packages(need_dovecot=False)
    with tempfile.TemporaryDirectory(prefix="mda-userdb-bench-") as directory, postgres_server() as pg:
        work = Path(directory)
        work.chmod(0o755)
        pg.sql("CREATE TABLE mailbox (username text PRIMARY KEY, maildir text)")
        pg.sql("GRANT SELECT ON mailbox TO mda")
        password_file = work / "pg-password"
        password_file.write_text(PASSWORD + "\n")
        ratios: dict[str, list[float]] = {way: [] for way in TARGETS}
        # A relative path, joined to each instance's path_base: every instance stores under its own root.
        pg.sql(f"INSERT INTO mailbox VALUES ('{USER}', '{DOMAIN}/user/Maildir')")
        for number in range(args.rounds):
            rates = one_round(work, number, pg, password_file, args)
            line = ", ".join(f"{way} {rates[way]:.0f} msg/s" for way in WAYS)
            for way in TARGETS:
                ratios[way].append(rates[way] / rates["yaml"])
            print(
                f"round {number + 1}: {line}; " + ", ".join(f"{w}/yaml {ratios[w][-1]:.3f}" for w in TARGETS),
                flush=True,
            )
        for way, target in TARGETS.items():
            median = statistics.median(ratios[way])
            verdict = "ok" if median >= target else "MISSED"
            print(f"median {way}/yaml {median:.3f} (target >= {target:.2f}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
