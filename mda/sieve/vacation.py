"""Vacation (RFC 5230): whether to answer, the persistent record of answers, and the reply message.

The decision follows RFC 5230 §4.5 and RFC 3834 §2, with the checks Pigeonhole adds: never answer the
null sender, system senders, automatic or bulk mail, mailing lists, or mail that does not name the
recipient; answer a sender once per period and handle. The record is kept in the ``state:`` store (mda/statestore)
so that it survives restarts and is shared by worker processes and by several instances.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence
from email.header import Header
from pathlib import Path

from mda.statestore import Database, SqliteFile, StateError

from .actions import PendingVacation, Vacation
from .ext_duplicate import Seen
from .message import SieveMessage, split_address

#: Pigeonhole's defaults ``sieve_vacation_min_period = 1d`` and ``sieve_vacation_max_period = 60d``.
MIN_PERIOD = 86400
MAX_PERIOD = 60 * 86400
#: RFC 5230 §4.1: ":days" defaults to 7.
DEFAULT_DAYS = 7

# RFC 3834 §2 and Pigeonhole: local parts of senders that are programs, never people.
_SYSTEM_LOCALPARTS = frozenset({"mailer-daemon", "listserv", "majordomo"})
# RFC 2369 / RFC 2919 list fields: a message carrying one came through a mailing list.
_LIST_FIELDS = ("list-id", "list-owner", "list-subscribe", "list-post", "list-unsubscribe", "list-help", "list-archive")
# RFC 5230 §4.5: the recipient must appear in one of these fields.
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_BULK = frozenset({"bulk", "list", "junk"})
_CRLF_OR_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
"""C0 and C1 controls and the Unicode line and paragraph separators: each may end a line for some reader
(Python's ``str.splitlines`` among them), so none is left in a header field."""


class VacationState:
    """Which senders were answered, per ``(recipient, sender, handle)``, and which IDs the ``duplicate``
    extension (RFC 7352) saw, per recipient: tables in the ``state:`` store (a SQLite file in
    ``state_dir``, or PostgreSQL shared by several instances).

    ``replied_recently`` only reads. The sender of a reply first :meth:`claims <claim>` it, atomically, so
    that of several deliveries (on several instances) only one sends it; it :meth:`releases <release>`
    the claim when the reply could not be sent, so that a failed reply does not suppress the next one.
    A store that fails means no reply (never two): ``replied_recently`` then answers True and the reason
    is kept in ``failures`` for the caller's log; ``duplicate_seen`` answers False (the message is
    handled as new, never dropped).
    """

    def __init__(self, store: Path | Database, *, read_only: bool = False) -> None:
        """``store`` is a database or a SQLite file; ``read_only`` (``mda resolve --message``) opens an
        existing file without creating or changing anything (SQLite's ``mode=ro``); writes then fail."""
        self.db = SqliteFile(store, read_only=read_only) if isinstance(store, Path) else store
        self.failures: list[str] = []

    def replied_recently(self, recipient: str, sender: str, handle: str, now: float) -> bool:
        try:
            self.db.prepare(SCHEMA)
            _, rows = self.db.run(_READ, _key(recipient, sender, handle))
        except StateError as error:
            self.failures.append(str(error))
            return True
        return bool(rows) and rows[0][0] > now

    def duplicate_seen(self, recipient: str, key: str, now: float) -> bool:
        try:
            self.db.prepare(SCHEMA)
            _, rows = self.db.run(_DUPLICATE_READ, {"recipient": recipient.lower(), "key_hash": key})
        except StateError as error:
            self.failures.append(str(error))
            return False
        return bool(rows) and rows[0][0] > now

    def record_duplicates(self, recipient: str, seen: Sequence[Seen], now: float | None = None) -> None:
        """Remember the IDs a delivery's ``duplicate`` tests saw; an ID already recorded keeps its expiry
        unless the test had ``:last``. Expired entries are pruned on the way. Raises StateError."""
        when = time.time() if now is None else now
        self.db.prepare(SCHEMA)
        self.db.run("DELETE FROM mda_sieve_duplicates WHERE expires <= :now", {"now": when})
        for item in seen:
            statement = _DUPLICATE_REFRESH if item.refresh else _DUPLICATE_KEEP
            self.db.run(statement, {"recipient": recipient.lower(), "key_hash": item.key, "expires": item.expires})

    def claim(self, reply: Vacation, now: float | None = None) -> float | None:
        """Record ``reply`` as sent unless another delivery did within its period; returns the record's
        expiry (for :meth:`release`) when this caller won and must send, else None. Raises StateError."""
        when = time.time() if now is None else now
        self.db.prepare(SCHEMA)
        expires = when + reply.period
        _, rows = self.db.run(
            _CLAIM, {**_key(reply.recipient, reply.to, reply.handle), "expires": expires, "now": when}
        )
        if rows and when - _pruned.get(self.db.label, 0.0) >= PRUNE_INTERVAL:
            _pruned[self.db.label] = when
            self.db.run("DELETE FROM mda_vacation WHERE expires <= :now", {"now": when})
        return expires if rows else None

    def release(self, reply: Vacation, expires: float) -> None:
        """Forget a claim whose reply was not sent (only this claim: same expiry)."""
        self.db.run(_RELEASE, {**_key(reply.recipient, reply.to, reply.handle), "expires": expires})

    def record(self, reply: Vacation, now: float | None = None) -> bool:
        """Remember that ``reply`` was sent; False when it was already recorded within its period."""
        return self.claim(reply, now) is not None


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mda_vacation (recipient TEXT NOT NULL, sender TEXT NOT NULL,"
    " handle TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (recipient, sender, handle))",
    "CREATE TABLE IF NOT EXISTS mda_sieve_duplicates (recipient TEXT NOT NULL, key_hash TEXT NOT NULL,"
    " expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (recipient, key_hash))",
)
_DUPLICATE_READ = "SELECT expires FROM mda_sieve_duplicates WHERE recipient = :recipient AND key_hash = :key_hash"
_DUPLICATE_INSERT = (
    "INSERT INTO mda_sieve_duplicates (recipient, key_hash, expires) VALUES (:recipient, :key_hash, :expires)"
    " ON CONFLICT (recipient, key_hash) DO "
)
_DUPLICATE_REFRESH = _DUPLICATE_INSERT + "UPDATE SET expires = excluded.expires"
_DUPLICATE_KEEP = _DUPLICATE_INSERT + "NOTHING"
_READ = "SELECT expires FROM mda_vacation WHERE recipient = :recipient AND sender = :sender AND handle = :handle"
_CLAIM = (
    "INSERT INTO mda_vacation (recipient, sender, handle, expires) VALUES (:recipient, :sender, :handle, :expires)"
    " ON CONFLICT (recipient, sender, handle) DO UPDATE SET expires = excluded.expires"
    " WHERE mda_vacation.expires <= :now RETURNING expires"
)
_RELEASE = (
    "DELETE FROM mda_vacation"
    " WHERE recipient = :recipient AND sender = :sender AND handle = :handle AND expires = :expires"
)
PRUNE_INTERVAL = 60.0
_pruned: dict[str, float] = {}


def _key(recipient: str, sender: str, handle: str) -> dict[str, str]:
    return {"recipient": recipient.lower(), "sender": sender.lower(), "handle": handle}


def skip_reason(
    pending: PendingVacation,
    message: SieveMessage,
    sender: str,
    recipients: tuple[str, ...],
) -> tuple[str | None, str]:
    """Return ``(why not, address)``: the reason not to answer (``None`` to answer) and the recipient
    address found in the message, which becomes the reply's default From."""
    if not sender:
        return "null sender (RFC 5230 §4.5)", ""
    local = split_address(sender).localpart.lower()
    if local in _SYSTEM_LOCALPARTS or local.startswith("owner-") or local.endswith("-request"):
        return "system address (RFC 3834 §2)", ""
    mine = {a.lower() for a in (*recipients, *pending.addresses) if a}
    if sender.lower() in mine:
        return "sender is the recipient", ""
    for value in message.header_values("auto-submitted"):
        if value.split(";", 1)[0].strip().lower() != "no":
            return "Auto-Submitted message (RFC 3834 §2)", ""
    for value in message.header_values("precedence"):
        if value.strip().lower() in _BULK:
            return f"Precedence: {value.strip()} message (RFC 3834 §2)", ""
    for name in _LIST_FIELDS:
        if message.headers.get(name):
            return "mailing list message (RFC 3834 §2)", ""
    for name in _RECIPIENT_FIELDS:
        for addr in message.addresses(name):
            if addr.all.lower() in mine:
                return None, addr.all
    return "recipient not named in To/Cc/Bcc (RFC 5230 §4.5)", ""


def decide(
    pending: PendingVacation,
    message: SieveMessage,
    sender: str,
    recipient: str,
    original_recipient: str | None,
    state: VacationState | None,
    now: float,
) -> tuple[Vacation | None, str]:
    """Apply the decision rules; returns the reply to send (or ``None``) and a reason for the log."""
    recipients = (recipient, original_recipient or "")
    why, found = skip_reason(pending, message, sender, recipients)
    if why is not None:
        return None, why
    period = min(max(pending.seconds, MIN_PERIOD), MAX_PERIOD)
    if state is not None and state.replied_recently(recipient, sender, pending.handle, now):
        return None, "already answered in this period (RFC 5230 §4.2)"
    subjects = message.header_values("subject")
    if pending.subject is not None:
        subject = pending.subject
    elif subjects and subjects[0]:
        subject = f"Auto: {subjects[0]}"  # RFC 5230 §4.5 default
    else:
        subject = "Automated reply"
    message_ids = message.headers.get("message-id")
    reply = Vacation(
        recipient=recipient,
        to=sender,
        from_=pending.from_ or found,
        subject=subject,
        reason=pending.reason,
        mime=pending.mime,
        handle=pending.handle,
        period=period,
        in_reply_to=message_ids[0].strip() if message_ids else None,
    )
    return reply, "reply"


def _clean(value: str) -> str:
    """Header text from a script or a message never spans lines: no injected fields."""
    return _CRLF_OR_CONTROL.sub(" ", value).strip()


def build_reply(reply: Vacation, *, now: float | None = None, hostname: str = "localhost") -> bytes:
    """The reply message (CRLF line ends), to be sent with the null sender ``MAIL FROM:<>``.

    RFC 3834 §3.1: ``Auto-Submitted: auto-replied``, ``In-Reply-To``/``References`` of the original.
    With ``:mime`` the reason is a MIME entity whose own headers follow ours (RFC 5230 §5).
    """
    headers = [
        ("Date", email.utils.formatdate(now, localtime=False)),
        ("Message-ID", email.utils.make_msgid(domain=hostname)),
        ("From", _clean(reply.from_)),
        ("To", f"<{_clean(reply.to)}>"),
        ("Subject", _encode_subject(_clean(reply.subject))),
        ("Auto-Submitted", "auto-replied (vacation)"),
        ("Precedence", "bulk"),
    ]
    if reply.in_reply_to:
        headers += [("In-Reply-To", _clean(reply.in_reply_to)), ("References", _clean(reply.in_reply_to))]
    headers.append(("MIME-Version", "1.0"))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    body = reply.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if reply.mime:
        return (head + body).encode("utf-8")
    head += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    return (head + "\r\n" + body).encode("utf-8")


def _encode_subject(subject: str) -> str:
    if subject.isascii():
        return subject
    return Header(subject, "utf-8").encode()
