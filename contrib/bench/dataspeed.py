"""In-process DATA throughput per content kind, as a ratio to one ``bytes.replace`` pass.

The DATA decoder turns wire bytes (CRLF, dot-stuffed, ending at CRLF ``.`` CRLF) into stored bytes (LF,
unstuffed). Its cost should not depend on what the message says. This runs mda's decoder
(``mda.session.data.DotDecoder``, into the ``Spool`` the server uses) fed in 64 KiB pieces as a socket
read returns them, for every kind in ``corpus.DATA_KINDS``, and compares each with one
``wire.replace(b"\\r\\n", b"\\n")`` over the same whole message in the same run: the floor any decoder
pays. The two are timed in turn, repetition after repetition, so that the load of a shared machine hits
both alike.

    python contrib/bench/dataspeed.py [--size 1M] [--reps 15] [--piece 64K]

Columns: MB/s of the reader (best of the repetitions, the least disturbed by a noisy machine), MB/s of
the replace pass, and their ratio. The last lines give the slowest kind's ratio and the spread
(fastest/slowest reader speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from corpus import DATA_KINDS, wire  # the harness's own modules, beside this file

from mda.session.data import DotDecoder, MessageSink
from mda.spool import Spool


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024 * 1024}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _read_once(payload: bytes, normalize: bool, read_size: int) -> float:
    """Feed the decoder a piece at a time, as the session does with what a socket read returns, into the
    spool the server uses (memory up to 2 MiB, see ``mda.spool``)."""
    pieces = [payload[start : start + read_size] for start in range(0, len(payload), read_size)]
    with Spool() as spool:
        began = time.process_time()
        sink = MessageSink(spool, max_size=len(payload) * 2, normalize_bare=normalize, max_header_size=None)
        decoder = DotDecoder(sink)
        for piece in pieces:
            if decoder.feed(piece) is not None:
                break
        decoder.finish()
        return time.process_time() - began


def best_seconds(payload: bytes, normalize: bool, reps: int, read_size: int) -> tuple[float, float]:
    """Best time of the reader and of one replace pass, alternating so that load hits both alike."""
    reader = floor = float("inf")
    for _ in range(reps):
        reader = min(reader, _read_once(payload, normalize, read_size))
        began = time.process_time()
        payload.replace(b"\r\n", b"\n")
        floor = min(floor, time.process_time() - began)
    return reader, floor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M", help="message size per kind (default 1M)")
    parser.add_argument("--reps", type=int, default=15, help="repetitions; the best is reported (default 15)")
    parser.add_argument("--piece", default="64K", help="bytes per socket read fed to the decoder (default 64K)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    print(f"{'kind':<12} {'reader MB/s':>12} {'replace MB/s':>13} {'ratio':>6}")
    speeds: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for kind in DATA_KINDS:
        payload = wire(kind, size)
        megabytes = len(payload) / 1e6
        reader_time, floor_time = best_seconds(payload, kind == "bare-lf", args.reps, parse_size(args.piece))
        reader, floor = megabytes / reader_time, megabytes / floor_time
        speeds[kind], ratios[kind] = reader, reader / floor
        print(f"{kind:<12} {reader:>12.0f} {floor:>13.0f} {reader / floor:>6.2f}")
    slowest = min(ratios, key=ratios.__getitem__)
    print(f"slowest kind: {slowest}, {ratios[slowest]:.2f} of one replace pass")
    print(f"spread: fastest/slowest reader {max(speeds.values()) / min(speeds.values()):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
