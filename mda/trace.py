"""Trace fields (``Return-Path``, ``Delivered-To``, ``Received``) and the loop checks built on them.

Pure functions on text and bytes. Nothing a client sent reaches a header with CR, LF or another
control character in it (RFC 5322 §2.2: a field body is printable characters and folding whitespace only).
"""

from __future__ import annotations

import datetime
import email.utils
import itertools
import os
import re
import time
from dataclasses import dataclass

_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f]")
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
MAX_HELO_IN_HEADER = 255
MAX_ORIGINAL_IN_HEADER = 998 - len("X-Original-To: ")
"""RFC 5322 §2.1.1: a header line is at most 998 characters."""


def header_safe(text: str) -> str:
    """Remove control characters (CR and LF included) so a value cannot start a new header line."""
    return _UNSAFE_IN_HEADER.sub("", text)


def helo_for_header(helo: str) -> str:
    """A HELO name as shown in ``Received``: domain or address-literal characters only."""
    cleaned = _HELO_SAFE.sub("_", helo)[:MAX_HELO_IN_HEADER]
    return cleaned or "unknown"


def with_protocol(*, lmtp: bool, extended: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """The ``with`` name of RFC 3848 and RFC 6531: ``LMTP``, ``ESMTPSA``, ``UTF8LMTPS``..."""
    if utf8:
        base = "UTF8LMTP" if lmtp else "UTF8SMTP"
    elif lmtp:
        base = "LMTP"
    else:
        base = "ESMTP" if extended else "SMTP"
    if base == "SMTP" and (tls or auth):
        base = "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


@dataclass(frozen=True)
class TraceInfo:
    """What one transaction tells every copy's trace block."""

    sender: str
    helo: str
    client_ip: str
    hostname: str
    protocol: str
    queue_id: str
    timestamp: float


def client_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3 address literals)."""
    if not ip:
        return "localhost"
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


_last_date: tuple[int, str] = (-1, "")
"""The last second ``received_date`` formatted and its text (one tuple: replaced atomically)."""


def received_date(timestamp: float) -> str:
    """RFC 5322 date-time of ``timestamp`` in local time, as ``Received:`` writes it.

    Its resolution is one second, so the text is made once per second and reused: under load the
    conversion (``localtime``, ``format_datetime``) would otherwise be repeated for every copy.
    """
    global _last_date
    second = int(timestamp)
    cached = _last_date
    if cached[0] == second:
        return cached[1]
    moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
    text = email.utils.format_datetime(email.utils.localtime(moment))
    _last_date = (second, text)
    return text


def trace_block(info: TraceInfo, recipient: str, original: str | None = None) -> bytes:
    """The header lines mda puts in front of one copy, LF line endings, UTF-8 (RFC 6532).

    Order, newest first as trace fields go (RFC 5322 §3.6.7): ``Return-Path``, ``Delivered-To``, then
    ``X-Original-To`` (``original``: the RCPT's DSN ``ORCPT``, as Postfix's local delivery writes it)
    when one was given, then ``Received``. Delivered-To and X-Original-To sit together because readers (Sieve, Dovecot,
    procmail recipes) look for the pair.
    """
    date = received_date(info.timestamp)
    rcpt = header_safe(recipient)
    received = (
        f"Received: from {helo_for_header(info.helo)} ({client_literal(info.client_ip)})\n"
        f"\tby {info.hostname} with {info.protocol} id {info.queue_id}\n"
        f"\tfor <{rcpt}>; {date}\n"
    )
    original_line = f"X-Original-To: {header_safe(original)[:MAX_ORIGINAL_IN_HEADER]}\n" if original else ""
    lines = f"Return-Path: <{header_safe(info.sender)}>\nDelivered-To: {rcpt}\n{original_line}{received}"
    return lines.encode("utf-8", "surrogateescape")


def header_fields(header_section: bytes, name: bytes) -> list[bytes]:
    """Unfolded values of every field called ``name`` (case-insensitive) in a header section."""
    wanted = name.lower() + b":"
    values: list[bytes] = []
    if wanted not in header_section.lower():  # most messages: no such field, no line-by-line walk
        return values
    current: bytearray | None = None
    for line in header_section.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += b" " + line.strip()
            continue
        if current is not None:
            values.append(bytes(current).strip())
            current = None
        if line[: len(wanted)].lower() == wanted:
            current = bytearray(line[len(wanted) :])
    if current is not None:
        values.append(bytes(current).strip())
    return values


def delivered_to_addresses(header_section: bytes) -> set[str]:
    """Lower-cased addresses of every ``Delivered-To`` field already in the message."""
    found = set()
    for value in header_fields(header_section, b"Delivered-To"):
        text = value.decode("utf-8", "replace").strip().strip("<>").strip()
        if text:
            found.add(text.lower())
    return found


def count_received(header_section: bytes) -> int:
    """How many ``Received`` fields the message carries (the hop count)."""
    if b"received:" not in header_section.lower():
        return 0
    count = 0
    for line in header_section.split(b"\n"):
        if line[:9].lower() == b"received:":
            count += 1
    return count


def new_queue_id() -> str:
    """A short unique id shown in ``250`` replies, ``Received`` and log lines."""
    micros = time.time_ns() // 1000
    return f"{micros:X}{os.getpid() & 0xFFFF:04X}{next(_serial) & 0xFFFF:04X}"


_serial = itertools.count()
