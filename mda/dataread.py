"""Streaming DATA reader: wire bytes in, stored bytes out, memory bounded whatever the message size.

DATA (RFC 5321 §4.5.2 and §4.1.1.4): the data ends at exactly CRLF ``.`` CRLF; a line that starts with ``.``
had one ``.`` added by the client, which is removed. Lines end with CRLF on the wire and LF in storage. A
bare CR or LF never ends the data (``<LF>.<LF>`` is the SMTP smuggling attack); it is counted so that the
message is refused (``550 5.6.0``) or, when configured, stored with LF.

The reader works on large blocks (the end marker is searched with ``readuntil`` in up to ``BLOCK``
bytes at a time), not line by line. ``Return-Path`` fields of the incoming header are dropped on the way
(RFC 5321 §4.4: a final delivery server may remove them; mda writes its own).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mda.spool import Spool

BLOCK = 64 * 1024
"""StreamReader limit: the most read at once while looking for the end marker (also bounds commands)."""
END_MARKER = b"\r\n.\r\n"
DOT_LINE = b".\r\n"
LINE_START = b"\r\n"
MID_LINE = b"--"
"""Context bytes meaning 'the previous piece ended inside a line'."""


@dataclass
class DataResult:
    """What the reader saw besides the bytes it spooled."""

    size: int = 0
    """Bytes as stored (LF endings, unstuffed, before mda's trace headers)."""
    too_big: bool = False
    bare_newlines: int = 0


class HeaderFilter:
    """Drops ``Return-Path`` fields (and their continuation lines) from the header section."""

    MAX_HEADER_LINE = BLOCK

    def __init__(self) -> None:
        self.in_header = True
        self._carry = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> bytes:
        if not self.in_header:
            return data
        self._carry += data
        out = bytearray()
        start = 0
        while self.in_header:
            end = self._carry.find(b"\n", start)
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
        rest = self._carry[start:]
        self._carry = bytearray()
        if not self.in_header:
            out += rest
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
            if b"\r\n." in block:
                block = block.replace(b"\r\n.", b"\r\n")
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


class MessageSink:
    """Decoded bytes → ``Return-Path`` filter → size check → spool: the path DATA and BDAT share."""

    def __init__(self, spool: Spool, *, max_size: int, normalize_bare: bool, stuffed: bool) -> None:
        self.spool = spool
        self.max_size = max_size
        self.decoder = DataDecoder(normalize_bare=normalize_bare, stuffed=stuffed)
        self.header = HeaderFilter()
        self.result = DataResult()

    def emit(self, wire: bytes, at_line_start: bool = True) -> None:
        self.decoder.at_line_start = at_line_start
        self._store(self.header.feed(self.decoder.decode(wire)))

    def _store(self, stored: bytes) -> None:
        self.result.size += len(stored)
        if self.result.size > self.max_size:
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

    def __init__(self, spool: Spool, *, max_size: int, normalize_bare: bool) -> None:
        self.spool = spool
        self.sink = MessageSink(spool, max_size=max_size, normalize_bare=normalize_bare, stuffed=False)
        self._held = b""

    async def read_chunk(self, reader: asyncio.StreamReader, size: int) -> None:
        """Read ``size`` octets in blocks of at most ``BLOCK``; raises IncompleteReadError on hang-up."""
        left = size
        while left:
            block = self._held + await reader.readexactly(min(left, BLOCK))
            left -= len(block) - len(self._held)
            self._held = b""
            if block.endswith(b"\r"):
                block, self._held = block[:-1], b"\r"
            if block:
                self.sink.emit(block)

    def finish(self) -> DataResult:
        if self._held:
            self.sink.emit(self._held)
            self._held = b""
        return self.sink.finish()


async def read_data(reader: asyncio.StreamReader, spool: Spool, *, max_size: int, normalize_bare: bool) -> DataResult:
    """Read one DATA payload up to and including the end marker, writing what is stored to ``spool``.

    The reader searches for ``.`` CRLF in bulk and checks that a CRLF precedes it; ``buffer`` always
    keeps the two bytes before unprocessed data as context (the CRLF that ended the DATA command line
    at first), so a marker split between two reads is still found and nothing is read past it.
    Over ``max_size`` the rest is read and dropped, so the session stays in step and can answer
    ``552 5.3.4``. Raises ``asyncio.IncompleteReadError`` when the client goes away mid-way.
    """
    sink = MessageSink(spool, max_size=max_size, normalize_bare=normalize_bare, stuffed=True)
    buffer = bytearray(LINE_START)
    while True:
        piece = await _read_block(reader, DOT_LINE)
        buffer += piece
        at_line_start = buffer[:2] == LINE_START
        if piece.endswith(DOT_LINE) and buffer.endswith(END_MARKER):
            sink.emit(bytes(buffer[2 : -len(DOT_LINE)]), at_line_start)
            break
        cut = buffer.rfind(LINE_START)
        if cut >= 2:
            sink.emit(bytes(buffer[2 : cut + 2]), at_line_start)
            del buffer[:cut]
        elif len(buffer) > BLOCK:
            # One line longer than a block: pass it on in pieces, keeping its last byte (maybe a CR).
            sink.emit(bytes(buffer[2:-1]), at_line_start)
            buffer = bytearray(MID_LINE) + buffer[-1:]
    return sink.finish()


async def _read_block(reader: asyncio.StreamReader, separator: bytes) -> bytes:
    """Up to and including ``separator``, or at most about ``BLOCK`` bytes when it is not in sight.

    ``LimitOverrunError.consumed`` is where a separator could start at the earliest, so what is read
    here never cuts a separator in two.
    """
    try:
        return await reader.readuntil(separator)
    except asyncio.LimitOverrunError as error:
        return await reader.readexactly(max(error.consumed, 1))
