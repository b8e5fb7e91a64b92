"""``duplicate`` (RFC 7352): has this user's script seen this message (or this ID) before?

The ID is the first ``Message-ID`` (or the field ``:header`` names, or the string ``:uniqueid`` gives),
kept per recipient and ``:handle`` as a hash, in the same SQLite file as the vacation record. An ID is
recorded only when the delivery's scripts succeed and the copies are committed, for ``:seconds``
(Pigeonhole's defaults: 12 hours, at most 2 days); with ``:last`` a repeat starts the period again.
A message without the ID is never a duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compiler import Test
    from .interpreter import _Run

DEFAULT_PERIOD = 12 * 3600
MAX_PERIOD = 2 * 86400


@dataclass(frozen=True, slots=True)
class Seen:
    """An ID to record once the delivery is committed: ``expires`` is a time in seconds since the epoch;
    ``refresh`` (``:last``) moves the expiry of an ID already recorded."""

    key: str
    expires: float
    refresh: bool


def test_duplicate(run: _Run, test: Test) -> bool:
    tags = test.tags
    kind, given = tags.get("id", ("header", "message-id"))
    if kind == "uniqueid":
        unique = run.expand(given, test.line)
    else:
        values = run.ctx.message.header_values(run.expand(given, test.line).lower())
        if not values or not values[0]:
            return False
        unique = values[0]
    handle = run.expand(tags["handle"], test.line) if "handle" in tags else ""
    key = hashlib.sha256(f"{handle}\0{unique}".encode("utf-8", "surrogatepass")).hexdigest()
    now = run.ctx.now_or_clock()
    pending = run.ctx.duplicates
    # Within one delivery the first test of an ID sees it as new, later ones as duplicate (RFC 7352 §3.1).
    seen = any(p.key == key for p in pending)
    if not seen and run.ctx.state is not None:
        seen = run.ctx.state.duplicate_seen(run.ctx.recipient, key, now)
    seconds = min(int(tags.get("seconds", DEFAULT_PERIOD)), MAX_PERIOD)
    pending.append(Seen(key, now + seconds, "last" in tags))
    return seen
