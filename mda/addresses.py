"""Envelope addresses: parsing (RFC 5321 §4.1.2), normalisation, subaddress and IDN.

Pure functions on text, no lookups. What leaves this module is either a checked ``Address`` whose parts
are safe to compare and to log, or an ``AddressError`` that the protocol turns into ``501 5.1.3``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

MAX_LOCAL_PART = 64
"""RFC 5321 §4.5.3.1.1: a local part is at most 64 octets."""
MAX_DOMAIN = 255
"""RFC 5321 §4.5.3.1.2: a domain is at most 255 octets."""

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_UTF8_ATEXT = r"\u0080-\U0010ffff"
"""RFC 6531 §3.3 adds every non-ASCII character to atext (UTF8-non-ascii). It goes first in the class:
``_ATEXT`` ends with ``-``, which in front of another range would make a range of its own."""
_DOT_ATOM = re.compile(rf"[{_UTF8_ATEXT}{_ATEXT}]+(?:\.[{_UTF8_ATEXT}{_ATEXT}]+)*")
_QUOTED = re.compile(r'"((?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*)"')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Controls (C0 and C1, e.g. U+0085), format characters (bidi overrides such as U+202E, zero-width
characters) and the line and paragraph separators U+2028/U+2029: never part of an address, since an
address becomes a directory name and a trace header field."""


class AddressError(ValueError):
    """An address that cannot be parsed; the message is safe to show to a client."""


@dataclass(frozen=True)
class Address:
    """A parsed mailbox: local part as sent (unquoted when it needs no quotes), domain as an A-label."""

    local: str
    domain: str
    utf8: bool = False
    """True when the address was written with non-ASCII text anywhere (local part or U-label domain):
    RFC 6531 §3.4 lets such an address through only when the transaction announced ``SMTPUTF8``."""

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def is_ascii(self) -> bool:
        return not self.utf8 and self.local.isascii()


def normalize_domain(name: str) -> str:
    """Lower-case A-label form of a domain; U-labels are converted (IDNA), so both forms match."""
    text = name.strip().rstrip(".")
    if not text:
        raise AddressError("empty domain")
    if text.startswith("[") and text.endswith("]"):
        return text.lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise AddressError("invalid internationalised domain") from None
    text = text.lower()
    if len(text) > MAX_DOMAIN:
        raise AddressError("domain too long")
    for label in text.split("."):
        if not _LABEL.fullmatch(label):
            raise AddressError("invalid domain")
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise AddressError("invalid internationalised domain") from None
    return text


def _local_part(text: str) -> str:
    if text.startswith('"'):
        match = _QUOTED.fullmatch(text)
        if not match:
            raise AddressError("invalid quoted local part")
        value = re.sub(r"\\(.)", r"\1", match.group(1))
        # RFC 5321 §4.1.2: "a"@x and a@x are the same mailbox; keep quotes only where they are needed.
        return value if _DOT_ATOM.fullmatch(value) else text
    if not _DOT_ATOM.fullmatch(text):
        raise AddressError("invalid local part")
    return text


@functools.lru_cache(maxsize=8192)
def parse_mailbox(text: str) -> Address:
    """Parse ``local@domain`` (no angle brackets).

    Cached: the same few addresses arrive again and again, and an ``Address`` is immutable (errors are
    raised again each time, never cached).
    """
    if _CONTROL.search(text):
        raise AddressError("control characters in address")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError("address is not valid UTF-8") from None
    if not text.isascii() and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text):
        raise AddressError("control, format or separator characters in address")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("address must be local@domain")
    if not local.isascii() and unicodedata.normalize("NFKC", local) != local:
        # One spelling per mailbox: the Kelvin sign (U+212A) would fold to "k", a fullwidth letter to
        # its ASCII twin; refused rather than folded, so paths, look-ups and duplicates agree.
        raise AddressError("local part is not in Unicode NFKC form")
    local = _local_part(local)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    return Address(local=local, domain=normalize_domain(domain), utf8=not text.isascii())


def parse_path(text: str, *, postmaster_domain: str | None = None) -> tuple[Address | None, str]:
    """Split ``<path> params`` of MAIL FROM/RCPT TO; returns (address or None for ``<>``, params).

    A source route (``<@a,@b:user@d>``, RFC 5321 §4.1.2 and Appendix C) is accepted and ignored.
    Brackets are optional, as many clients omit them. With ``postmaster_domain``, the bare
    ``<Postmaster>`` that RFC 5321 §4.1.1.3 and §4.5.1 require a server to accept means
    ``postmaster@postmaster_domain``.
    """
    text = text.strip()
    if text.startswith("<"):
        end = _closing_bracket(text)
        inner, params = text[1:end], text[end + 1 :].strip()
    else:
        inner, _, params = text.partition(" ")
        params = params.strip()
    if inner.startswith("@"):
        _route, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError("invalid source route")
    if inner == "":
        return None, params
    if postmaster_domain is not None and inner.lower() == "postmaster":
        return parse_mailbox(f"postmaster@{postmaster_domain}"), params
    return parse_mailbox(inner), params


def _closing_bracket(text: str) -> int:
    if '"' not in text and "\\" not in text:
        end = text.find(">")
        if end < 0:
            raise AddressError("missing '>'")
        return end
    quoted = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    raise AddressError("missing '>'")


def split_detail(local: str, delimiters: str) -> tuple[str, str | None]:
    """``alice+lists`` → (``alice``, ``lists``) at the first of any delimiter character (like Postfix)."""
    if not delimiters:
        return local, None
    for index, char in enumerate(local):
        if char in delimiters and index > 0:
            return local[:index], local[index + 1 :]
    return local, None


def normalize_config_address(value: str, *, allow_catch_all: bool = False) -> str:
    """An address written in the configuration, domain in A-label lower case; ``@domain`` if allowed."""
    text = value.strip()
    if allow_catch_all and text.startswith("@"):
        return "@" + normalize_domain(text[1:])
    address = parse_mailbox(text)
    return f"{address.local}@{address.domain}"


def fold_local(local: str, case_sensitive: bool) -> str:
    """The local part as compared (RFC 5321 §2.4 leaves case to the host; mda folds by default)."""
    return local if case_sensitive else local.lower()
