"""Read-only view of the message for Sieve tests, parsed lazily.

Headers are split and unfolded once, on the first test that needs them; the MIME tree is only built for
the ``body`` test. Text is decoded as UTF-8 with replacement, so invalid octets and NULs in a hostile
message never stop a delivery.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import email.utils
import quopri
import re
from email.message import Message as MimePart
from typing import NamedTuple

from .budget import ADDRESS_PARSE_COST, EDITED_HEADER_COST, MIME_LEVEL_COST, MIME_LINE_COST, Meter

# RFC 2047 §2 encoded-word; linear whitespace between two encoded words is dropped (§6.2).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t\r\n]+(?==\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)")
_BOUNDARY = re.compile(rb"boundary[ \t]*=", re.IGNORECASE)
"""A multipart boundary parameter (RFC 2046 §5.1.1): how deep the MIME structure may nest at most."""
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded words; a word with an unknown charset or broken encoding stays as is."""
    if "=?" not in value:
        return value
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub(r"\1", value))


def _decode_word(m: re.Match[str]) -> str:
    charset, encoding, text = m.group(1).split("*", 1)[0], m.group(2).upper(), m.group(3)
    try:
        if encoding == "B":
            raw = binascii.a2b_base64(text.encode("ascii") + b"==")
        else:
            raw = quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
        return raw.decode(charset, errors="replace")
    except (LookupError, ValueError, UnicodeEncodeError):
        return m.group()


class Address(NamedTuple):
    """One address of an address-list header (RFC 5322 §3.4), split for the address parts."""

    localpart: str
    domain: str
    all: str
    """``localpart@domain``, or the local part alone when there is no domain."""


_ADDR_SPEC = r"([^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+)"
_ATEXT = r"[^\x00-\x20\x7f\"(),.:;<>@\[\]\\]"
_SIMPLE_ADDRESS = re.compile(rf"[ \t]*(?:<?{_ADDR_SPEC}>?|(?:{_ATEXT}+[ \t]+)*{_ATEXT}+[ \t]*<{_ADDR_SPEC}>)[ \t]*")


def parse_address_list(values: list[str]) -> list[Address]:
    """Addresses of address-list fields (RFC 5322 §3.4), groups flattened.

    The common field of one plain address (``a@b``, ``<a@b>``, ``Display Name <a@b>`` with a name of
    plain words) is split directly; anything else (comments, quotes, dots in the name, groups, several
    addresses) goes through ``email.utils``, which gives the same answer for the common forms, slower.
    """
    if len(values) == 1:
        simple = _SIMPLE_ADDRESS.fullmatch(values[0])
        if simple:
            return [split_address(simple.group(1) or simple.group(2))]
    return [split_address(a) for _, a in email.utils.getaddresses(values) if a]


def split_address(addr: str) -> Address:
    local, at, domain = addr.rpartition("@")
    if not at:
        return Address(addr, "", addr)
    return Address(local, domain, addr if domain else local)


class SieveMessage:
    """The message under test; ``raw`` is exactly what will be stored (LF or CRLF line ends).

    The parts are computed on first use and kept in plain attributes (``functools.cached_property``
    takes a lock on every first access before Python 3.12, a cost paid per delivery here).
    """

    def __init__(self, raw: bytes, meter: Meter | None = None) -> None:
        self.raw = raw
        self.meter = Meter() if meter is None else meter
        """Charged for the expensive parses: address lists and the MIME structure."""
        self._decoded: dict[str, list[str]] = {}
        self._addresses: dict[str, list[Address]] = {}
        self.parsed: dict[str, list[str]] | None = None
        """:attr:`headers` once parsed; None before, and again after editheader changed the section."""
        self._mime: MimePart | None = None
        self.edited = False
        self.edited_size = 0
        """Bytes of the edited header section (what reading its fields again costs)."""
        self._edits: tuple[list[bytes], bytes] | None = None
        """The edited header section as fields, and the rest: kept so each edit does not split again."""
        """Whether editheader (RFC 5293) changed the header section: see :meth:`header_block`."""

    @property
    def size(self) -> int:
        """Octets of the message as given, which is what Pigeonhole's ``size`` test compares."""
        return len(self.raw)

    def _header_end(self) -> tuple[int, int]:
        """Where the header section ends and where the body starts."""
        raw = self.raw
        if raw.startswith((b"\n", b"\r\n")):
            return 0, raw.index(b"\n") + 1
        # The first empty line: a line end followed by LF or CRLF. Two bounded ``find`` calls beat one
        # regex search, which cannot skip ahead; the CRLF one looks only before the first LF LF.
        lf = raw.find(b"\n\n")
        crlf = raw.find(b"\n\r\n", 0, len(raw) if lf < 0 else lf + 2)  # one starting before ``lf``
        if lf < 0 and crlf < 0:
            return len(raw), len(raw)
        newline = lf if crlf < 0 else crlf
        start = newline - 1 if raw[newline - 1 : newline] == b"\r" else newline
        return start, newline + (2 if raw[newline + 1 : newline + 2] == b"\n" else 3)

    @property
    def headers(self) -> dict[str, list[str]]:
        """Field name (lower case) → raw unfolded values in message order.

        One regular expression finds every field with its continuation lines; a line that is neither a
        field nor a continuation is skipped together with the continuation lines that follow it.
        """
        if self.parsed is None:
            if self.edited:
                self.meter.spend(EDITED_HEADER_COST * self.edited_size)
            out: dict[str, list[str]] = {}
            text = self.raw[: self._header_end()[0]].decode("utf-8", errors="replace")
            crlf = "\r" in text  # the spool's LF-only copy needs no line-end trimming per field
            for name, value in _FIELD.findall(text):
                if crlf:
                    value = value.removesuffix("\r")
                if "\n" in value:
                    value = value.replace("\r\n", "").replace("\n", "")
                key = name.lower()
                known = out.get(key)  # no list built and dropped for every field, as setdefault does
                if known is None:
                    out[key] = [value]
                else:
                    known.append(value)
            self.parsed = out
        return self.parsed

    def header_values(self, name: str) -> list[str]:
        """Decoded values of a field, without leading/trailing whitespace (RFC 5228 §5.7, RFC 2047);
        decoded once per field (a script tests the same few fields many times)."""
        cached = self._decoded.get(name)
        if cached is None:
            headers = self.parsed if self.parsed is not None else self.headers
            raw = headers.get(name.lower())
            cached = self._decoded[name] = [decode_rfc2047(v).strip(" \t") for v in raw] if raw else []
        return cached

    def addresses(self, name: str) -> list[Address]:
        """Addresses in an address-list field, groups flattened (RFC 5322 §3.4); parsed once per field."""
        cached = self._addresses.get(name)
        if cached is None:
            headers = self.parsed if self.parsed is not None else self.headers
            values = headers.get(name.lower())
            if values:
                self.meter.spend(ADDRESS_PARSE_COST * sum(len(value) for value in values))
            cached = self._addresses[name] = parse_address_list(values) if values else []
        return cached

    # -- editheader (RFC 5293, mda.sieve.ext_editheader) ---------------------------------------------
    def _fields(self) -> tuple[list[bytes], bytes]:
        """The header section as one byte string per field (continuation lines included), and the
        rest of the message (the empty line and the body)."""
        if self._edits is not None:
            return self._edits
        start, body = self._header_end()
        lines = self.raw[:start].splitlines(keepends=True)
        if not lines:  # no field: the message starts with the empty line
            rest = self.raw
        elif start < body:  # the last field's line end is outside raw[:start]
            ending = b"\r\n" if self.raw[start : start + 1] == b"\r" else b"\n"
            lines[-1] += ending
            rest = self.raw[start + len(ending) :]
        else:
            rest = b""
        fields: list[bytes] = []
        for line in lines:
            if fields and line[:1] in (b" ", b"\t"):
                fields[-1] += line
            else:
                fields.append(line)
        if fields and not fields[-1].endswith(b"\n"):
            fields[-1] += b"\n"
        return fields, rest

    def _replace_header(self, fields: list[bytes], rest: bytes) -> None:
        """Every edit rebuilds the header section, so each is charged its size: a script of many
        thousand ``addheader`` commands is stopped by the work limit instead of growing quadratically."""
        header = b"".join(fields)
        self.meter.spend(len(header))
        self.raw = header + (rest or b"\n")
        self.edited_size = len(header)
        self._edits = (fields, rest)
        self.edited = True
        self.parsed = None
        self._decoded = {}
        self._addresses = {}
        self._mime = None

    def add_field(self, data: bytes, *, last: bool = False) -> None:
        """Insert one whole field (with its line end) first, or last with ``:last``."""
        fields, rest = self._fields()
        if last:
            fields.append(data)
        else:
            fields.insert(0, data)
        self._replace_header(fields, rest)

    def delete_fields(self, name: str, occurrences: frozenset[int]) -> None:
        """Remove the given occurrences (0-based, in message order) of the field ``name``."""
        fields, rest = self._fields()
        kept: list[bytes] = []
        seen = 0
        for data in fields:
            match = _FIELD_NAME.match(data)
            if match is not None and match.group(1).decode("ascii").lower() == name:
                seen += 1
                if seen - 1 in occurrences:
                    continue
            kept.append(data)
        self._replace_header(kept, rest)

    def header_block(self) -> bytes:
        """The header section as edited, up to and including the last field's line end (without the
        empty line that ends it)."""
        return b"".join(self._fields()[0])

    @property
    def body(self) -> bytes:
        return self.raw[self._header_end()[1] :]

    @property
    def mime(self) -> MimePart:
        if self._mime is None:
            self._mime = email.message_from_bytes(self.raw, policy=email.policy.compat32)
        return self._mime

    def charged_mime(self) -> MimePart:
        """:attr:`mime`, its first parse charged to the meter first: the cost grows with lines ×
        nesting depth, minutes for a hostile 1 MiB message of a few hundred nested multiparts."""
        if self._mime is None:
            lines = self.raw.count(b"\n") + 1
            boundaries = len(_BOUNDARY.findall(self.raw))
            self.meter.spend(lines * (MIME_LINE_COST + MIME_LEVEL_COST * boundaries))
        return self.mime

    def body_parts(self, transform: str, content_types: tuple[str, ...]) -> list[str]:
        """Texts for the ``body`` test (RFC 5173 §5): the raw body, or decoded leaf parts.

        ``:text`` takes the ``text/*`` leaf parts; ``:content`` the leaf parts whose type matches one of
        ``content_types`` (``""`` is any, ``"text"`` a whole top-level type, ``"text/html"`` exact).
        The first parse of the MIME structure is charged to the meter first (:meth:`charged_mime`).
        """
        if transform == "raw":
            return [self.body.decode("utf-8", errors="replace")]
        wanted = ("text",) if transform == "text" else content_types
        texts: list[str] = []
        for part in self.charged_mime().walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type().lower()
            if not any(_type_matches(ctype, w.lower()) for w in wanted):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or ("utf-8" if ctype.startswith("text/") else "latin-1")
            try:
                texts.append(payload.decode(charset, errors="replace"))
            except LookupError:
                texts.append(payload.decode("utf-8", errors="replace"))
        return texts


def _type_matches(ctype: str, wanted: str) -> bool:
    if not wanted:
        return True
    if "/" in wanted:
        return ctype == wanted
    return ctype.split("/", 1)[0] == wanted
