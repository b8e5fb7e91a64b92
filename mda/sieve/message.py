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
from dataclasses import dataclass
from email.message import Message as MimePart
from functools import cached_property

# RFC 2047 §2 encoded-word; linear whitespace between two encoded words is dropped (§6.2).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t\r\n]+(?==\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)")
_HEADER_SPLIT = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:(.*)", re.DOTALL)


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


@dataclass(frozen=True, slots=True)
class Address:
    """One address of an address-list header (RFC 5322 §3.4), split for the address parts."""

    localpart: str
    domain: str

    @property
    def all(self) -> str:
        return f"{self.localpart}@{self.domain}" if self.domain else self.localpart


_SIMPLE_ADDRESS = re.compile(r"[ \t]*<?([^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+)>?[ \t]*")


def parse_address_list(values: list[str]) -> list[Address]:
    """Addresses of address-list fields (RFC 5322 §3.4), groups flattened.

    The common field of one plain address (``a@b`` or ``<a@b>``) is split directly; anything else
    (display names, comments, quotes, groups, several addresses) goes through ``email.utils``.
    """
    if len(values) == 1:
        simple = _SIMPLE_ADDRESS.fullmatch(values[0])
        if simple:
            return [split_address(simple.group(1))]
    return [split_address(a) for _, a in email.utils.getaddresses(values) if a]


def split_address(addr: str) -> Address:
    local, at, domain = addr.rpartition("@")
    return Address(local, domain) if at else Address(addr, "")


class SieveMessage:
    """The message under test; ``raw`` is exactly what will be stored (LF or CRLF line ends)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._decoded: dict[str, list[str]] = {}
        self._addresses: dict[str, list[Address]] = {}

    @property
    def size(self) -> int:
        """Octets of the message as given, which is what Pigeonhole's ``size`` test compares."""
        return len(self.raw)

    @cached_property
    def _split(self) -> tuple[bytes, bytes]:
        if self.raw.startswith((b"\n", b"\r\n")):
            return b"", self.raw.split(b"\n", 1)[1]
        m = _HEADER_SPLIT.search(self.raw)
        if m is None:
            return self.raw, b""
        return self.raw[: m.start()], self.raw[m.end() :]

    @cached_property
    def headers(self) -> dict[str, list[str]]:
        """Field name (lower case) → raw unfolded values in message order."""
        out: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self._split[0].decode("utf-8", errors="replace").split("\n"):
            line = line.removesuffix("\r")
            if line[:1] in (" ", "\t") and current is not None:
                current[-1] += line
                continue
            m = _FIELD.fullmatch(line)
            if m is None:
                current = None
                continue
            current = out.setdefault(m.group(1).lower(), [])
            current.append(m.group(2))
        return out

    def header_values(self, name: str) -> list[str]:
        """Decoded values of a field, without leading/trailing whitespace (RFC 5228 §5.7, RFC 2047)."""
        cache = self._decoded
        key = name.lower()
        if key not in cache:
            cache[key] = [decode_rfc2047(v).strip(" \t") for v in self.headers.get(key, ())]
        return cache[key]

    def addresses(self, name: str) -> list[Address]:
        """Addresses in an address-list field, groups flattened (RFC 5322 §3.4); parsed once per field."""
        key = name.lower()
        cached = self._addresses.get(key)
        if cached is None:
            cached = self._addresses[key] = parse_address_list(self.headers.get(key, []))
        return cached

    @cached_property
    def body(self) -> bytes:
        return self._split[1]

    @cached_property
    def mime(self) -> MimePart:
        return email.message_from_bytes(self.raw, policy=email.policy.compat32)

    def body_parts(self, transform: str, content_types: tuple[str, ...]) -> list[str]:
        """Texts for the ``body`` test (RFC 5173 §5): the raw body, or decoded leaf parts.

        ``:text`` takes the ``text/*`` leaf parts; ``:content`` the leaf parts whose type matches one of
        ``content_types`` (``""`` is any, ``"text"`` a whole top-level type, ``"text/html"`` exact).
        """
        if transform == "raw":
            return [self.body.decode("utf-8", errors="replace")]
        wanted = ("text",) if transform == "text" else content_types
        texts: list[str] = []
        for part in self.mime.walk():
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
