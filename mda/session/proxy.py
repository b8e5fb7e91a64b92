"""PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt), parsed from bytes.

A load balancer sends one header before anything else; it carries the client's address. ``parse`` looks
at what has arrived so far and says: need more bytes, invalid, or the header's length and the client
address it names (None for a v2 ``LOCAL`` health check, v1 ``UNKNOWN``, ``UNSPEC`` or ``AF_UNIX``).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107
"""The longest v1 header, CRLF included."""
V2_MAX_BODY = 65535


@dataclass(frozen=True)
class ProxyHeader:
    length: int
    """Bytes of the header, to be taken off the input."""
    client: str | None


class ProxyError(ValueError):
    """The input is no valid PROXY header."""


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None when more bytes are needed; raises ``ProxyError``."""
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data)
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    raise ProxyError("no PROXY signature")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError("v1 header too long")
        return None
    words = data[len(V1_PREFIX) : end].decode("ascii", "replace").split(" ")
    length = end + 2
    if words[0] == "UNKNOWN":
        return ProxyHeader(length, None)
    if len(words) != 5 or words[0] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed v1 header")
    version = 4 if words[0] == "TCP4" else 6
    try:
        source = ipaddress.ip_address(words[1])
        destination = ipaddress.ip_address(words[2])
    except ValueError as error:
        raise ProxyError("bad v1 address") from error
    if source.version != version or destination.version != version:
        raise ProxyError("v1 address family mismatch")
    for port in words[3:]:
        if not port.isdigit() or (len(port) > 1 and port[0] == "0") or int(port) > 65535:
            raise ProxyError("bad v1 port")
    return ProxyHeader(length, str(source))


_FAMILIES = {0x1: (4, 12), 0x2: (16, 36)}
"""v2 address family → (address size, address block size)."""


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version_command, family_protocol, body = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if version_command >> 4 != 2 or version_command & 0xF not in (0, 1):
        raise ProxyError("bad v2 version or command")
    length = 16 + body
    if len(data) < length:
        return None
    if version_command & 0xF == 0:  # LOCAL: the proxy speaks for itself
        return ProxyHeader(length, None)
    family, protocol = family_protocol >> 4, family_protocol & 0xF
    if family not in (0, 1, 2, 3) or protocol not in (0, 1, 2):
        raise ProxyError("bad v2 family")
    if family not in _FAMILIES:
        return ProxyHeader(length, None)  # UNSPEC or AF_UNIX: no address of ours
    size, block = _FAMILIES[family]
    if body < block:
        raise ProxyError("v2 address block too short")
    source = ipaddress.ip_address(data[16 : 16 + size])
    return ProxyHeader(length, str(source))
