"""PROXY v1 and v2 headers from bytes: complete, incomplete, hostile."""

from __future__ import annotations

import struct

import pytest

from mda.session.proxy import V2_SIGNATURE, ProxyError, ProxyHeader, parse


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


IPV4 = bytes([203, 0, 113, 5, 192, 0, 2, 1]) + struct.pack("!HH", 40000, 25)
IPV6 = bytes(15) + b"\x01" + bytes(16) + struct.pack("!HH", 1, 2)


@pytest.mark.parametrize(
    ("data", "header"),
    [
        (b"PROXY TCP4 198.51.100.9 192.0.2.1 5000 24\r\nEHLO", ProxyHeader(43, "198.51.100.9")),
        (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", ProxyHeader(40, "2001:db8::1")),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(15, None)),
        (v2(1, 0x11, IPV4) + b"EHLO", ProxyHeader(28, "203.0.113.5")),
        (v2(1, 0x21, IPV6), ProxyHeader(52, "::1")),
        (v2(0, 0x00, b""), ProxyHeader(16, None)),  # LOCAL: a health check
        (v2(1, 0x31, bytes(216)), ProxyHeader(232, None)),  # AF_UNIX: no address of ours
        (v2(1, 0x11, IPV4 + b"\x03\x00\x04tlv!"), ProxyHeader(35, "203.0.113.5")),  # TLVs skipped
    ],
)
def test_valid_headers(data, header):
    assert parse(data) == header


@pytest.mark.parametrize(
    "data",
    [b"", b"PRO", b"PROXY TCP4 1.2.3.4", V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21\x11\x00", v2(1, 0x11, IPV4)[:-1]],
)
def test_incomplete_headers_ask_for_more(data):
    assert parse(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO x\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::2 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",
        b"PROXY " + b"x" * 200,
        V2_SIGNATURE + b"\x11\x11\x00\x00",  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x00",  # command 2
        v2(1, 0x11, b"\x01\x02"),  # address block too short
        v2(1, 0x41, b""),  # unknown family
    ],
)
def test_invalid_headers(data):
    with pytest.raises(ProxyError):
        parse(data)
