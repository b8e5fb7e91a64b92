"""DATA and BDAT decoding without I/O: wire bytes in, stored bytes into a spool, whatever the split.

DATA (RFC 5321 §4.5.2, §4.1.1.4) ends at exactly CRLF ``.`` CRLF; a line that starts with ``.`` had one
``.`` added by the client, which is removed; CRLF becomes LF. A bare CR or LF never ends the data
(``<LF>.<LF>`` is the SMTP smuggling attack): it is counted, so the message is refused (``550 5.6.0``) or,
when configured, stored with LF. BDAT (RFC 3030) carries exactly the announced octets, not stuffed.

The cost does not depend on the content. Each piece received is searched once for the whole marker
(``bytes.find`` of CRLF ``.``, which also finds the stuffed lines); what precedes it is converted over the
whole span with ``bytes`` methods (a ``translate`` deleting the CRs, two counts that prove each was part
of a CRLF and count the bare newlines), never line by line. Only the bytes that could begin a marker
split across two pieces (at most ``CR LF . CR``) are held back and put in front of the next piece, so the
input may be cut anywhere and the stored bytes are the same.
"""

from __future__ import annotations

from mda.dataread import DataResult, HeaderFilter
from mda.spool import Spool

END_MARKER = b"\r\n.\r\n"
DOT_LINE = b".\r\n"


def _held_length(piece: bytes) -> int:
    """How many final bytes of ``piece`` may begin the end marker (``CR LF . CR`` at most): held back."""
    last = piece[-1:]
    if last == b"\r":
        return 4 if piece.endswith(b"\r\n.\r") else 1
    if last == b"\n":
        return 2 if piece.endswith(b"\r\n") else 0
    if last == b".":
        return 3 if piece.endswith(b"\r\n.") else 0
    return 0


class MessageSink:
    """Stored bytes → ``Return-Path`` filter → size and header checks → spool: what DATA and BDAT share.

    A spool that fails (a disk error when it spills to its file) stops storing; the message is still read
    to its end so the session stays in step, and ``failed`` makes the session answer ``451 4.3.0``.
    """

    def __init__(self, spool: Spool, *, max_size: int, normalize_bare: bool, max_header_size: int | None) -> None:
        self.spool = spool
        self.max_size = max_size
        self.normalize_bare = normalize_bare
        self.header = HeaderFilter(max_header_size)
        self.result = DataResult()
        self.failed: BaseException | None = None

    def convert(self, span: bytes) -> None:
        """Store one unstuffed span of wire bytes that does not end inside a CRLF.

        Deleting every CR (``translate``, one tight pass) turns CRLF into LF as ``replace`` would, at
        about half its cost, as long as every CR is followed by LF: two counts prove it (as many CRLF as
        CR), and also count the bare LF (LF beyond the CRLF). Only a span with a bare CR is converted
        again with ``replace``, which keeps that CR.
        """
        line_feeds = span.count(b"\n")
        out = span.translate(None, b"\r")
        returns = len(span) - len(out)
        crlf = span.count(b"\r\n") if returns else 0
        bare_lf = line_feeds - crlf
        bare_cr = returns - crlf
        if bare_cr:
            out = span.replace(b"\r\n", b"\n")
        if bare_lf or bare_cr:
            self.result.bare_newlines += bare_lf + bare_cr
            if self.normalize_bare:
                out = out.replace(b"\r", b"\n")
                line_feeds += bare_cr
        if self.header.in_header:
            dropped = self.header.dropped
            filtered = self.header.feed(out)
            self._store(filtered, line_feeds - (self.header.dropped - dropped))
        else:
            self._store(out, line_feeds)

    def _store(self, stored: bytes, newlines: int | None = None) -> None:
        result = self.result
        result.size += len(stored)
        if self.header.too_big:
            result.header_too_big = True  # refused: the rest is read and dropped, like too_big
        elif result.size > self.max_size:
            result.too_big = True
        elif stored and self.failed is None:
            try:
                self.spool.write(stored, newlines)
            except OSError as error:
                self.failed = error

    def finish(self) -> DataResult:
        tail = self.header.flush()
        if tail:
            self._store(tail)
        return self.result


_DENSE = 256
"""Stuffed lines in one piece past which one ``replace`` pass is cheaper than cutting at each."""
_LINE_DOT = b"\r\n."


def _scan(piece: bytes) -> tuple[int, list[int] | None]:
    """Where the end marker starts in ``piece`` (-1 when absent) and the stuffed dots before it.

    One search for CRLF ``.`` finds both: the marker is the one followed by CRLF. Stuffed lines are rare
    in real mail, so their dots are listed and cut out with one join; past ``_DENSE`` of them the list
    is None and the caller unstuffs with one ``replace`` instead, so the cost stays bounded either way.
    """
    cuts: list[int] = []
    found = piece.find(_LINE_DOT)
    while found >= 0:
        if piece.startswith(b"\r\n", found + 3):
            return found, cuts
        if len(cuts) == _DENSE:
            return piece.find(END_MARKER, found), None
        cuts.append(found + 2)
        found = piece.find(_LINE_DOT, found + 3)
    return -1, cuts


class DotDecoder:
    """DATA: feed pieces until ``feed`` returns where the end marker ended."""

    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink
        self._held = b""
        self._line_start = True
        """Nothing emitted yet: the DATA command's CRLF precedes the held bytes."""

    def feed(self, data: bytes) -> int | None:
        """Decode ``data``; None when all of it was taken, else how many of its bytes the data used
        (the marker included): the rest belongs to the next command."""
        held = self._held
        piece = held + data if held else data
        skip = 0
        if self._line_start:
            if piece.startswith(DOT_LINE):
                return len(DOT_LINE) - len(held)
            if DOT_LINE.startswith(piece):
                self._held = piece  # "." or ".\r": wait for the next byte
                return None
            skip = 1 if piece[:1] == b"." else 0  # the first line's stuffing
        end, cuts = _scan(piece)
        if end >= 0:
            self._emit(piece, skip, cuts, end + 2)
            return end + len(END_MARKER) - len(held)
        keep = _held_length(piece)
        stop = len(piece) - keep
        self._held = piece[stop:] if keep else b""
        if cuts:
            cuts = [cut for cut in cuts if cut < stop]
        if stop > skip:
            self._emit(piece, skip, cuts, stop)
            self._line_start = False
        return None

    def _emit(self, piece: bytes, skip: int, cuts: list[int] | None, stop: int) -> None:
        """Store ``piece[skip:stop]`` without the stuffed dots at ``cuts`` (all of them when None)."""
        if cuts is None:
            span = piece[skip:stop].replace(_LINE_DOT, b"\r\n")
        elif cuts:
            view = memoryview(piece)  # the parts are joined straight from the piece: one copy
            parts = []
            start = skip
            for cut in cuts:
                parts.append(view[start:cut])
                start = cut + 1
            parts.append(view[start:stop])
            span = b"".join(parts)
        else:
            span = piece if skip == 0 and stop == len(piece) else piece[skip:stop]
        self.sink.convert(span)

    def finish(self) -> DataResult:
        return self.sink.finish()


class ChunkDecoder:
    """BDAT: every chunk's octets, no stuffing, no marker; a CRLF may be split between chunks, so a final
    CR is held back until the next piece shows whether an LF follows (a bare CR otherwise)."""

    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink
        self._held = b""

    @property
    def spool(self) -> Spool:
        return self.sink.spool

    def feed(self, data: bytes) -> None:
        piece = self._held + data if self._held else data
        if piece.endswith(b"\r"):
            piece, self._held = piece[:-1], b"\r"
        else:
            self._held = b""
        if piece:
            self.sink.convert(piece)

    def finish(self) -> DataResult:
        if self._held:
            self.sink.convert(self._held)
            self._held = b""
        return self.sink.finish()
