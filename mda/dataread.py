"""Streaming DATA reader: wire bytes in, stored bytes out, memory bounded whatever the message size.

DATA (RFC 5321 §4.5.2 and §4.1.1.4): the data ends at exactly CRLF ``.`` CRLF; a line that starts with ``.``
had one ``.`` added by the client, which is removed. Lines end with CRLF on the wire and LF in storage. A
bare CR or LF never ends the data (``<LF>.<LF>`` is the SMTP smuggling attack); it is counted so that the
message is refused (``550 5.6.0``) or, when configured, stored with LF.

The reader works on large blocks (the end marker is searched with ``readuntil`` in up to the stream's
limit at a time), not line by line, and costs the same whatever the content. ``Return-Path`` fields
of the incoming header are dropped on the way (RFC 5321 §4.4: a final delivery server may remove
them; mda writes its own).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mda.spool import Spool

BLOCK = 64 * 1024
"""The longest header line filtered."""
STREAM_LIMIT = 16 * 1024
"""The session's ``StreamReader`` limit (the most it buffers while looking for a line end or DATA's end
marker; it stops reading the socket at twice this) and the size of each BDAT read. A session waiting
for the rest of a message holds about this much, so 1000 sessions in DATA hold about 16 MiB here
(64 KiB cost four times that, and the freed blocks stayed resident after the sessions closed)."""
END_MARKER = b"\r\n.\r\n"
DOT_LINE = b".\r\n"
LINE_END_DOT = b"\n.\r\n"
"""What the reader searches for: a line that is only a dot (the end marker when a CR precedes it)."""
LINE_START = b"\r\n"


@dataclass
class DataResult:
    """What the reader saw besides the bytes it spooled."""

    size: int = 0
    """Bytes as stored (LF endings, unstuffed, before mda's trace headers)."""
    too_big: bool = False
    header_too_big: bool = False
    bare_newlines: int = 0


class HeaderFilter:
    """Drops ``Return-Path`` fields (and their continuation lines) from the header section.

    The header is examined line by line, the one part of the data path whose cost follows the line
    count, so it is bounded: with ``max_size``, a header section (its empty line included) longer than
    that stops the filter and sets ``too_big`` (the message is then refused, as with Postfix's
    ``header_size_limit``); without it, a single line longer than ``MAX_HEADER_LINE`` ends the filtering
    and the rest passes as it is.
    """

    MAX_HEADER_LINE = BLOCK

    def __init__(self, max_size: int | None = None) -> None:
        self.in_header = True
        self.max_size = max_size
        self.too_big = False
        self._seen = 0
        """Header bytes consumed so far (complete lines)."""
        self._carry = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> bytes:
        if not self.in_header:
            return data
        self._carry += data
        limit = len(self._carry)
        if self.max_size is not None:
            limit = min(limit, self.max_size - self._seen)  # no line may end past the limit
        out = bytearray()
        start = 0
        while self.in_header:
            end = self._carry.find(b"\n", start, limit)
            if end < 0:
                break
            line = bytes(self._carry[start : end + 1])
            start = end + 1
            if line == b"\n":
                self.in_header = False
                out += line
                break
            if line[:1] in (b" ", b"\t"):
                if not self._dropping:
                    out += line
                continue
            self._dropping = line[:12].lower() == b"return-path:"
            if not self._dropping:
                out += line
        self._seen += start
        rest = self._carry[start:]
        self._carry = bytearray()
        if not self.in_header:
            out += rest
        elif self.max_size is not None:
            if self._seen + len(rest) > self.max_size:
                self.in_header, self.too_big = False, True
            else:
                self._carry = rest
        elif len(rest) > self.MAX_HEADER_LINE:
            # A header line this long is hostile; stop filtering rather than buffer without bound.
            self.in_header = False
            out += rest
        else:
            self._carry = rest
        return bytes(out)

    def flush(self) -> bytes:
        rest, self._carry = bytes(self._carry), bytearray()
        return rest if not self._dropping else b""


class DataDecoder:
    """Turns wire blocks (CRLF, dot-stuffed for DATA, raw for BDAT) into stored bytes (LF, unstuffed)."""

    def __init__(self, *, normalize_bare: bool, stuffed: bool = True) -> None:
        self.normalize_bare = normalize_bare
        self.stuffed = stuffed
        self.at_line_start = True
        self.bare_newlines = 0

    def decode(self, block: bytes) -> bytes:
        """Decode complete wire lines (or one piece of an overlong line when ``at_line_start`` is False)."""
        if self.stuffed:
            if self.at_line_start and block[:1] == b".":
                block = block[1:]
            block = _unstuff(block)
        wire_length = len(block)
        line_feeds = block.count(b"\n")
        block = block.replace(b"\r\n", b"\n")
        # Each CRLF became one byte shorter, so the LFs that were not part of a CRLF are the bare ones;
        # any CR left after the replacement is a bare CR (two passes instead of three counts).
        bare_lf = line_feeds - (wire_length - len(block))
        bare_cr = block.count(b"\r") if b"\r" in block else 0
        if bare_lf or bare_cr:
            self.bare_newlines += bare_lf + bare_cr
            if self.normalize_bare:
                block = block.replace(b"\r", b"\n")
        return block


def _unstuff(block: bytes) -> bytes:
    """Remove the ``.`` a client added to each line starting with one (RFC 5321 §4.5.2).

    Such lines are rare (a few per message at most), so the block is cut at each one and joined once:
    one copy of the block, where ``replace`` would pass over it twice whenever a single one is present.
    """
    cut = block.find(b"\r\n.")
    if cut < 0:
        return block
    pieces = []
    start = 0
    while cut >= 0:
        pieces.append(block[start : cut + 2])
        start = cut + 3
        cut = block.find(b"\r\n.", start)
    pieces.append(block[start:])
    return b"".join(pieces)


class MessageSink:
    """Decoded bytes → ``Return-Path`` filter → size check → spool: the path DATA and BDAT share."""

    def __init__(
        self, spool: Spool, *, max_size: int, normalize_bare: bool, stuffed: bool, max_header_size: int | None = None
    ) -> None:
        self.spool = spool
        self.max_size = max_size
        self.decoder = DataDecoder(normalize_bare=normalize_bare, stuffed=stuffed)
        self.header = HeaderFilter(max_header_size)
        self.result = DataResult()

    def emit(self, wire: bytes, at_line_start: bool = True) -> None:
        self.decoder.at_line_start = at_line_start
        self._store(self.header.feed(self.decoder.decode(wire)))

    def _store(self, stored: bytes) -> None:
        self.result.size += len(stored)
        if self.header.too_big:
            self.result.header_too_big = True  # refused: the rest is read and dropped, like too_big
        elif self.result.size > self.max_size:
            self.result.too_big = True
        elif stored:
            self.spool.write(stored)

    def finish(self) -> DataResult:
        tail = self.header.flush()
        if tail:
            self._store(tail)
        self.result.bare_newlines = self.decoder.bare_newlines
        return self.result


class ChunkReader:
    """RFC 3030 ``BDAT``: exactly the announced octets per chunk, no dot-stuffing, no end marker.

    A CRLF may be split between two chunks, so a chunk's final CR is held back until the next chunk
    shows whether an LF follows (a bare CR otherwise, counted like in DATA).
    """

    def __init__(
        self, spool: Spool, *, max_size: int, normalize_bare: bool, max_header_size: int | None = None
    ) -> None:
        self.spool = spool
        self.sink = MessageSink(
            spool, max_size=max_size, normalize_bare=normalize_bare, stuffed=False, max_header_size=max_header_size
        )
        self._held = b""

    async def read_chunk(self, reader: asyncio.StreamReader, size: int) -> None:
        """Read ``size`` octets in blocks of at most ``STREAM_LIMIT``; raises IncompleteReadError on hang-up."""
        left = size
        while left:
            block = self._held + await reader.readexactly(min(left, STREAM_LIMIT))
            left -= len(block) - len(self._held)
            self._held = b""
            if block.endswith(b"\r"):
                block, self._held = block[:-1], b"\r"
            if block:
                self.sink.emit(block)
            del block  # not held while the next block is awaited

    def finish(self) -> DataResult:
        if self._held:
            self.sink.emit(self._held)
            self._held = b""
        return self.sink.finish()


async def read_data(
    reader: asyncio.StreamReader,
    spool: Spool,
    *,
    max_size: int,
    normalize_bare: bool,
    max_header_size: int | None = None,
) -> DataResult:
    """Read one DATA payload up to and including the end marker, writing what is stored to ``spool``.

    The cost does not depend on the content: the reader asks the stream for ``LF . CRLF`` (a line that
    is only a dot), which real mail never contains before its end, so a message arrives in blocks of
    up to the stream's limit however many of its lines end with a period. The marker is CRLF ``.`` CRLF:
    a CR that ends one block is held back and put in front of the next, so the check is one
    ``endswith`` on the block; ``LF . CRLF`` after a bare LF is ordinary text. Only where a line starts
    right after a block (at the start of the data, after a CRLF ending a block) are its first bytes
    read on their own, to see whether they are the ``.`` CRLF that ends the data (the CRLF before it
    being the one already read). Nothing is read past the marker: what follows belongs to the next
    command. Over ``max_size`` (or a header section over ``max_header_size``) the rest is read and
    dropped, so the session stays in step and can answer ``552 5.3.4``. Raises
    ``asyncio.IncompleteReadError`` when the client goes away mid-way.
    """
    sink = MessageSink(
        spool, max_size=max_size, normalize_bare=normalize_bare, stuffed=True, max_header_size=max_header_size
    )
    line_start = True  # the DATA command line ended with CRLF
    held = b""  # a CR read at the end of the previous block, its LF not yet seen
    while True:
        if line_start:
            head = await reader.readexactly(1)
            if head == b".":
                head += await reader.readexactly(2)
                if head == DOT_LINE:
                    break
            block, at_line_start = held + head, not held
        else:
            block, at_line_start = held + await _read_block(reader, LINE_END_DOT), False
        if block.endswith(END_MARKER):
            sink.emit(block[: -len(DOT_LINE)], at_line_start)
            break
        held = b"\r" if block.endswith(b"\r") else b""
        if held:
            block = block[:-1]
        # A held CR starts the next line itself: that line's first bytes are not at a line start.
        line_start = not held and block.endswith(LINE_START)
        if block:
            sink.emit(block, at_line_start)
        del block  # not held while the next block is awaited: a session waiting for data keeps no block
    return sink.finish()


async def _read_block(reader: asyncio.StreamReader, separator: bytes) -> bytes:
    """Up to and including ``separator``, or what the stream holds when it is not in sight.

    ``LimitOverrunError.consumed`` is where a separator could start at the earliest, so what is read
    here never cuts a separator in two.
    """
    try:
        return await reader.readuntil(separator)
    except asyncio.LimitOverrunError as error:
        return await reader.readexactly(max(error.consumed, 1))
