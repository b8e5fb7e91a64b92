"""What a received message looked like besides its bytes, and the header filter on its way to the spool.

The wire decoding itself (end marker, unstuffing, line ends, bare newlines) is the session's
(``mda.session.data``); ``mda deliver`` reads its message from standard input. Both pass what they store
through ``HeaderFilter``: ``Return-Path`` fields of the incoming header are dropped on the way (RFC 5321
§4.4: a final delivery server may remove them; mda writes its own), and ``max_header_size`` is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 64 * 1024
"""The longest header line filtered."""


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
        self._carry = b""
        """The partial line at the end of what was fed (never an LF in it)."""
        self._dropping = False
        self.dropped = 0
        """Lines dropped so far: what ``feed`` returns has that many LF fewer than it was given (the
        partial line held back has none)."""

    def feed(self, data: bytes) -> bytes:
        if not self.in_header:
            return data
        # Only the header's lines are examined; what follows its empty line is passed on as it is.
        fresh = not self._carry
        ended = True
        if data[:1] == b"\n" and fresh:  # the bytes before ended a line: this one is empty
            head = 1
        else:
            empty = data.find(b"\n\n")
            head = empty + 2 if empty >= 0 else len(data)
            ended = empty >= 0
        part = data[:head] if head < len(data) else data
        text = part if fresh else self._carry + part
        self._carry = b""
        if (
            not self._dropping
            and (self.max_size is None or self._seen + len(text) <= self.max_size)
            and b"return-path:" not in text.lower()
        ):
            out = self._pass(text, ended)
        else:
            out = self._filter(text)
        if self.in_header or self.too_big or head == len(data):
            return out
        if fresh and len(out) == head:
            return data  # nothing dropped: the bytes as given
        with memoryview(data) as view:
            return b"".join((out, view[head:]))

    def _pass(self, text: bytes, ended: bool) -> bytes:
        """``text`` has no line to drop and stays within the limit: its complete lines pass as they are."""
        if ended:
            self.in_header = False
            self._seen += len(text)
            return text
        complete = text.rfind(b"\n") + 1
        self._seen += complete
        if self.max_size is None and len(text) - complete > self.MAX_HEADER_LINE:
            self.in_header = False  # see _filter
            return text
        self._carry = text[complete:]
        return text[:complete]

    def _filter(self, text: bytes) -> bytes:
        """``text`` line by line: ``Return-Path`` fields dropped, the limit enforced."""
        limit = len(text)
        if self.max_size is not None:
            limit = min(limit, self.max_size - self._seen)  # no line may end past the limit
        out = bytearray()
        start = 0
        while self.in_header:
            end = text.find(b"\n", start, limit)
            if end < 0:
                break
            line = text[start : end + 1]
            start = end + 1
            if line == b"\n":
                self.in_header = False
                out += line
                break
            if line[:1] in (b" ", b"\t"):
                if self._dropping:
                    self.dropped += 1
                else:
                    out += line
                continue
            self._dropping = line[:12].lower() == b"return-path:"
            if self._dropping:
                self.dropped += 1
            else:
                out += line
        self._seen += start
        rest = text[start:]
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
        rest, self._carry = self._carry, b""
        return rest if not self._dropping else b""
