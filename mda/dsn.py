"""Delivery Status Notifications: the RFC 3461 parameters and the RFC 3464 "delivered" report.

The parameters travel with the envelope: ``RET`` and ``ENVID`` on MAIL, ``NOTIFY`` and ``ORCPT`` on each
RCPT (kept per recipient, in RCPT order). mda is the final hop, so it is the one that "relays" a success
notification (RFC 3461 §5.2.2: a final delivery agent that receives NOTIFY=SUCCESS sends a "delivered"
DSN). That needs an outbound path, so ``DSN`` is announced only when ``submission`` is configured;
without it the parameters are still accepted and checked, as RFC 3461 §4 asks of any server that sees
them, but no notification goes out.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mda import outbound
from mda.addresses import AddressError, parse_mailbox
from mda.config import SubmissionConfig

MAX_ENVID = 100
"""RFC 3461 §4.4: ENVID is at most 100 characters (xtext-encoded)."""
MAX_ORCPT = 500
"""RFC 3461 §4.2: ORCPT is at most 500 characters."""
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
DEFAULT_NOTIFY = frozenset({"FAILURE"})
"""RFC 3461 §4.1 leaves the default to the server: without ``NOTIFY``, no success report is sent."""

_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_UNSAFE_IN_ORIGINAL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Controls (C0 with CR and LF, DEL, C1) and the Unicode line separators: a decoded ORCPT address goes into an
``X-Original-To`` field, Sieve's envelope and a report, so none of them may reach it (RFC 5322 §2.2)."""


class DsnSyntaxError(ValueError):
    """A DSN parameter that breaks RFC 3461 syntax: answered ``501 5.5.4``."""


def _xtext_octets(text: str) -> bytes:
    """RFC 3461 §4: ``+XX`` is the octet XX; every other character is itself (33-126, not ``+``/``=``)."""
    if not _XTEXT.match(text):
        raise DsnSyntaxError("not xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")


def decode_xtext(text: str) -> str:
    """The text an xtext stands for (octets that are not UTF-8 become U+FFFD)."""
    return _xtext_octets(text).decode("utf-8", "replace")


def encode_xtext(text: str) -> str:
    """The xtext form of ``text`` (UTF-8 octets outside 33-126, ``+`` and ``=`` become ``+XX``)."""
    return "".join(
        chr(octet) if 33 <= octet <= 126 and octet not in (0x2B, 0x3D) else f"+{octet:02X}"
        for octet in text.encode("utf-8")
    )


def check_notify(value: str) -> frozenset[str]:
    """RFC 3461 §4.1: ``NEVER`` alone, or a comma list of SUCCESS, FAILURE, DELAY."""
    items = [item.upper() for item in value.split(",")]
    if items == ["NEVER"]:
        return frozenset({"NEVER"})
    if not items or any(item not in NOTIFY_VALUES for item in items) or len(set(items)) != len(items):
        raise DsnSyntaxError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return frozenset(items)


@dataclass(frozen=True)
class OriginalRecipient:
    """A checked ``ORCPT``: its address type (``rfc822``...) and the decoded address."""

    addr_type: str
    address: str


def check_orcpt(value: str) -> OriginalRecipient:
    """RFC 3461 §4.2: ``addr-type ; xtext``, whose decoded address is UTF-8 without control characters
    or line breaks and, for ``rfc822``, a ``local@domain`` mailbox (RFC 5321 §4.1.2)."""
    if len(value) > MAX_ORCPT:
        raise DsnSyntaxError("ORCPT too long")
    addr_type, semicolon, encoded = value.partition(";")
    if not semicolon or not _ADDR_TYPE.match(addr_type) or not encoded:
        raise DsnSyntaxError("ORCPT must be addr-type;xtext")
    try:
        address = _xtext_octets(encoded).decode("utf-8")
    except UnicodeDecodeError:
        raise DsnSyntaxError("ORCPT address is not UTF-8") from None
    if _UNSAFE_IN_ORIGINAL.search(address):
        raise DsnSyntaxError("control characters in ORCPT address")
    if addr_type.lower() == "rfc822":
        try:
            parse_mailbox(address)
        except AddressError:
            raise DsnSyntaxError("ORCPT address must be local@domain") from None
    return OriginalRecipient(addr_type, address)


@dataclass(frozen=True)
class RecipientDsn:
    """The DSN parameters of one RCPT, checked once when it arrives and kept with its recipient."""

    notify: frozenset[str] = DEFAULT_NOTIFY
    original: OriginalRecipient | None = None
    """``ORCPT``: this recipient's address as the original sender gave it, before any forwarding."""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> RecipientDsn:
        """``NOTIFY`` and ``ORCPT`` from the RCPT parameters; raises :class:`DsnSyntaxError`."""
        notify = check_notify(params["NOTIFY"]) if "NOTIFY" in params else DEFAULT_NOTIFY
        original = check_orcpt(params["ORCPT"]) if "ORCPT" in params else None
        return cls(notify, original)

    @property
    def wants_success(self) -> bool:
        """``NOTIFY=SUCCESS``: a "delivered" report is asked for (RFC 3461 §5.2.2)."""
        return "SUCCESS" in self.notify


NO_DSN = RecipientDsn()
"""A recipient that came without DSN parameters (or from ``mda deliver``)."""


def check_ret(value: str) -> str:
    """RFC 3461 §4.3: ``FULL`` or ``HDRS``."""
    if value.upper() not in ("FULL", "HDRS"):
        raise DsnSyntaxError("RET must be FULL or HDRS")
    return value.upper()


def check_envid(value: str) -> str:
    """RFC 3461 §4.4: xtext, at most 100 characters; returns the decoded id."""
    if not value or len(value) > MAX_ENVID:
        raise DsnSyntaxError("ENVID empty or too long")
    return decode_xtext(value)


@dataclass(frozen=True)
class DeliveredRecipient:
    """One recipient the success report covers."""

    address: str
    original: OriginalRecipient | None = None


MAX_LINE = 998
"""RFC 5322 §2.1.1: a line is at most 998 characters without its CRLF."""


def wrap_long_lines(message: bytes, limit: int = MAX_LINE) -> bytes:
    """``message`` (CRLF lines) with every line longer than ``limit`` octets broken into pieces.

    Each piece after the first starts with a space: in a header section that is RFC 5322 folding, in a
    body an extra space. A UTF-8 sequence is never split. A report quotes the original, it does not
    forward it, so this small change is better than a report the next server refuses.
    """
    if not any(len(line) > limit for line in message.split(b"\r\n")):
        return message
    out = []
    for line in message.split(b"\r\n"):
        while len(line) > limit:
            cut = limit
            while cut > limit - 3 and line[cut] & 0xC0 == 0x80:
                cut -= 1
            out.append(line[:cut])
            line = b" " + line[cut:]
        out.append(line)
    return b"\r\n".join(out)


def _whole_fields(header_section: bytes, budget: int) -> bytes:
    """The leading header fields (with their folded lines) that fit in ``budget`` octets."""
    if len(header_section) <= budget:
        return header_section
    end = 0
    for match in re.finditer(rb"\r\n(?![ \t])", header_section):
        if match.end() > budget:
            break
        end = match.end()
    return header_section[:end]


def success_report(
    *,
    reporting_mta: str,
    sender: str,
    recipients: Sequence[DeliveredRecipient],
    envid: str | None,
    ret: str | None,
    queue_id: str,
    header_section: bytes,
    full_message: bytes | None,
    size_limit: int,
) -> bytes:
    """An RFC 3464 ``multipart/report; report-type=delivery-status`` with ``Action: delivered``.

    The third part is the original header section (``RET=HDRS`` or no RET: RFC 3461 §4.3 leaves the
    default to the server) or the whole message (``RET=FULL`` and ``full_message`` given). The report
    stays within ``size_limit`` octets (``dsn_size_limit``, like Postfix's ``bounce_size_limit``): a
    message that does not fit is returned as its header section, cut after the last whole field that
    fits. Only a recipient list longer than the limit by itself makes a longer report. No line is longer
    than 998 octets (RFC 5322 §2.1.1), so a report of a message with long lines is not refused on its way.
    """
    boundary = f"{queue_id}/{reporting_mta}"
    now = email.utils.formatdate(time.time(), localtime=True)
    per_recipient = []
    for rcpt in recipients:
        lines = []
        if rcpt.original is not None:
            original = rcpt.original
            lines.append(f"Original-Recipient: {original.addr_type}; {encode_xtext(original.address)}")
        lines += [f"Final-Recipient: rfc822; {rcpt.address}", "Action: delivered", "Status: 2.0.0"]
        per_recipient.append("\r\n".join(lines) + "\r\n")
    envelope_lines = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        envelope_lines.append(f"Original-Envelope-Id: {encode_xtext(envid)}")
    envelope_lines.append(f"Arrival-Date: {now}")
    status = "\r\n".join(envelope_lines) + "\r\n\r\n" + "\r\n".join(per_recipient)
    listed = "\r\n".join(f"  <{rcpt.address}>" for rcpt in recipients)
    tail = f"\r\n--{boundary}--\r\n".encode()

    def head(third_type: str, note: str) -> bytes:
        text = (
            f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
            f"To: <{sender}>\r\n"
            f"Subject: Successful Mail Delivery Report\r\n"
            f"Date: {now}\r\n"
            f"Message-ID: <{queue_id}.dsn@{reporting_mta}>\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
            "\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Your message was delivered to:\r\n{listed}\r\n{note}\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            f"{status}\r\n"
            f"--{boundary}\r\n"
            f"Content-Type: {third_type}\r\n\r\n"
        )
        return wrap_long_lines(text.encode("utf-8", "surrogateescape"))

    if ret == "FULL" and full_message is not None:
        first = head("message/rfc822", "")
        third = wrap_long_lines(outbound.crlf(full_message))
        if len(first) + len(third) + len(tail) <= size_limit:
            return first + third + tail
    note = f"\r\nThe message is larger than {size_limit} bytes: only its header is returned.\r\n"
    first = head("text/rfc822-headers", note if ret == "FULL" else "")
    third = _whole_fields(wrap_long_lines(outbound.crlf(header_section)), size_limit - len(first) - len(tail))
    return first + third + tail


def submit(submission: SubmissionConfig, recipient: str, message: bytes, *, timeout: float = 30.0) -> None:
    """Send one notification with the null reverse-path (RFC 3461 §6.2: DSNs never cause DSNs).

    Blocking: run it in a worker thread. Raises on failure (the caller logs it; the mail itself is
    already delivered, so nothing is answered differently).
    """
    outbound.send(submission, "", [recipient], message, timeout=timeout)
