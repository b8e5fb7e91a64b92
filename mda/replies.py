"""Every reply mda sends, defined once, and the one table from OS errors to replies.

Replies carry an enhanced status code (RFC 3463, RFC 2034) and a client-safe text; the reason that goes
to the log travels separately in ``DeliveryError``, so no exception text or path ever reaches a client
(README, "What each reply means").
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


def result_of(code: int) -> str:
    """``delivered``, ``tempfail`` or ``permfail`` by the first digit of a reply code (RFC 5321 §4.2.1):
    4yz is transient, 5yz permanent, and the positive ones (2yz, and 3yz, which never ends a delivery)
    are not failures."""
    if code >= 500:
        return "permfail"
    return "tempfail" if code >= 400 else "delivered"


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply line: ``code enhanced text``."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        # RFC 2034: enhanced codes go on 2xx, 4xx and 5xx replies; 354 has none.
        return f"{self.code} {self.enhanced} {self.text}" if self.enhanced else f"{self.code} {self.text}"

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    @property
    def status(self) -> str:
        """``delivered``, ``tempfail`` or ``permfail``: the outcome word used in logs and metrics."""
        return result_of(self.code)

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)


class DeliveryError(Exception):
    """A failure that knows its reply; ``reason`` is for the log only."""

    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


# Session and command replies (RFC 5321 §4.2, RFC 2033, RFC 3463).
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Reset")
NOOP_OK = Reply(250, "2.0.0", "OK")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_REFUSED = Reply(502, "5.5.1", "EXPN not available")
HELP = Reply(214, "2.0.0", "See RFC 5321 and RFC 2033")

UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
SYNTAX_ERROR = Reply(501, "5.5.2", "Syntax error")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters")
PARAM_UNKNOWN = Reply(555, "5.5.4", "Parameter not recognized")
NEED_HELO = Reply(503, "5.5.1", "Send LHLO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "No valid recipients")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
LHLO_ONLY = Reply(500, "5.5.1", "This is an LMTP server: use LHLO")
NOT_LMTP = Reply(500, "5.5.1", "This is an SMTP server: use EHLO or HELO")
TOO_MANY_UNKNOWN = Reply(421, "4.7.0", "Too many unrecognized commands, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad address syntax")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
UNSAFE_ADDRESS = Reply(550, "5.1.3", "Address cannot be used as a mailbox name")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")

# Replies of the extensions (RFC 3207 §4, RFC 4954 §6, RFC 3030 §2, RFC 3461 §4), each with its RFC code.
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "AUTH not available")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
IN_TRANSACTION = Reply(503, "5.5.1", "Not allowed during a mail transaction")
CHUNK_OK = Reply(250, "2.0.0", "octets received")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT")
BAD_COMMAND_BYTES = Reply(500, "5.5.2", "Invalid characters in command")

# Recipient policy.
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
LOOP_DETECTED = Reply(554, "5.4.6", "Mail loop detected")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops")
CLIENT_DENIED = Reply(554, "5.7.1", "Access denied")
LOOKUP_FAILED = Reply(451, "4.3.0", "Temporary lookup failure, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")

# Message content and storage.
DELIVERED = Reply(250, "2.0.0", "Delivered")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header too large")
BARE_NEWLINE = Reply(550, "5.6.0", "Message contains bare CR or LF")
MAILBOX_FULL = Reply(552, "5.2.2", "Mailbox full")
MAILBOX_FULL_TEMPORARY = Reply(452, "4.2.2", "Mailbox full")
DISK_FULL = Reply(452, "4.3.1", "Insufficient system storage")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing")
MAILBOX_BUSY = Reply(450, "4.2.0", "Mailbox busy, try again later")


def saved(queue_id: str, recipient: str | None = None, note: str = "") -> Reply:
    """``250 2.0.0 [<recipient>] QUEUEID Saved [note]``, the success of a delivery: LMTP names the recipient of
    each reply, SMTP's single reply does not. MTAs log this text as the delivery status."""
    words = [f"<{recipient}>" if recipient is not None else "", queue_id, "Saved", note]
    return DELIVERED.with_text(" ".join(word for word in words if word))


_ERRNO_REPLIES: dict[int, Reply] = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: MAILBOX_FULL,
    errno.EFBIG: MAILBOX_FULL,
    errno.EAGAIN: MAILBOX_BUSY,
    errno.EACCES: LOCAL_ERROR,
    errno.EPERM: LOCAL_ERROR,
    errno.EROFS: LOCAL_ERROR,
}
"""Postfix's ``mbox_dsn`` table in spirit: disk full is temporary, over a hard quota is permanent."""


def reply_for_error(error: BaseException, default: Reply = LOCAL_ERROR) -> Reply:
    """The reply for any failure during delivery; unknown ones answer ``451 4.3.0``."""
    if isinstance(error, DeliveryError):
        return error.reply
    if isinstance(error, OSError) and error.errno is not None:
        return _ERRNO_REPLIES.get(error.errno, default)
    return default


def describe_error(error: BaseException) -> str:
    """The logged reason for a failure (may hold paths: never sent to a client)."""
    if isinstance(error, DeliveryError):
        return error.reason
    return f"{type(error).__name__}: {error}"
