"""The enumerated values of configuration settings, as ``StrEnum`` types.

``mda.config`` declares which key takes which of them (and refuses any other value, naming the allowed
ones); the rest of the code compares with the members, never with string literals. A member is a ``str``
equal to its value, so it prints, logs and labels metrics as the word written in the file. Kept apart
from ``mda.config`` because modules that ``mda.config`` itself imports (``mda.userdb``) use them too.
"""

from __future__ import annotations

from enum import StrEnum


class StorageFormat(StrEnum):
    """``storage.format`` and a domain's or user's ``format``: one file per message, or one file per mailbox."""

    MAILDIR = "maildir"
    MBOX = "mbox"


class Protocol(StrEnum):
    """``listeners[].protocol``; ``policy`` is Postfix's policy delegation protocol (mda/policyservice.py)."""

    LMTP = "lmtp"
    SMTP = "smtp"
    POLICY = "policy"


class TlsMode(StrEnum):
    """``listeners[].tls.mode``: TLS after ``STARTTLS``, or from the first byte."""

    STARTTLS = "starttls"
    IMPLICIT = "implicit"


class BareNewline(StrEnum):
    """``bare_newline``: what a bare CR or LF in message data gets."""

    REJECT = "reject"
    NORMALIZE = "normalize"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
