"""How much work one Sieve run may do, counted in deterministic units rather than measured in time.

A script may hold thousands of keys and a message may be 1 MiB of text, so a filter costs up to keys ×
text size: 24,000 ``body :contains`` keys against a large body took seconds of CPU per recipient.
Every comparison charges its worst case *before* it runs, in units of about one byte compared
(casemap folding and wildcard matching cost more per byte, and parsing the MIME structure for the
``body`` test costs per line and per nesting level). When a run's units are spent, it stops with a
runtime error: the message goes to INBOX by the implicit keep and the log line says why, as for any
other runtime error (RFC 5228 §2.10.6). Units make the limit reproducible: the same script and message
are stopped at the same place on every machine and under any load.
"""

from __future__ import annotations

DEFAULT_WORK_LIMIT = 1 << 30
"""Units one recipient's scripts may spend (the default of ``sieve.work_limit``, which ``mda.config``
takes from here): a thousand full scans of the largest text Sieve is shown (1 MiB), a fraction of a
second of CPU; real filters spend a few thousand."""

FOLD_COST = 2
"""Units per character to fold a value for ``i;ascii-casemap`` (``str.translate`` is slower than a scan)."""
WILDCARD_COST = 16
"""Units per character and per key character for a ``:matches`` piece with ``?`` wildcards between two
``*``: the regular expression may try every position of the value against the whole piece."""
LITERAL_SEARCH_COST = 2
"""Units per character to find a literal piece between two ``*`` (a linear search)."""
ADDRESS_PARSE_COST = 16384
"""Units per character of an address-list field parsed for ``address`` tests or the vacation checks:
``email.utils`` takes about 15 µs a character on hostile input (14 s for a 1 MiB field of ``@``)."""
EDITED_HEADER_COST = 128
"""Units per byte to split the header section into fields again after editheader changed it (the
received header section is split once, uncharged: its size is bounded by ``max_header_size``)."""
MIME_LINE_COST = 1024
"""Units per line to parse the message's MIME structure (Python's ``email`` parser, for ``body``)."""
MIME_LEVEL_COST = 512
"""Units per line and per multipart ``boundary`` declared: the parser checks each line against every
open boundary, so deep nesting costs lines × depth."""


class WorkLimitExceeded(Exception):
    """The run spent its units; the interpreter turns this into a runtime error naming the command."""


class Meter:
    """Units spent so far by one run against its limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = DEFAULT_WORK_LIMIT) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, units: int) -> None:
        """Charge ``units`` before doing the work; raises when the limit would be passed."""
        self.used += units
        if self.used > self.limit:
            raise WorkLimitExceeded(f"work limit of {self.limit} units exceeded (sieve.work_limit)")
