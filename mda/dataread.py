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
