"""``enotify`` (RFC 5435) with the ``mailto`` method (RFC 5436): tell someone that mail arrived.

Roundcube's "send notification" rule writes ``notify :message "…" "mailto:me@example.net"``. Only
``mailto:`` is offered. A URI that is not a valid ``mailto:`` (RFC 6068) is a compile error when written
in the script, a runtime error when built from variables; as in Pigeonhole, several recipients in the
path are separated by ``%2C`` and ``mailto:`` alone notifies nobody. The notification is sent through
``submission`` from the null sender with ``Auto-Submitted: auto-notified``, never about a message that
is itself automatic (RFC 5436 §2.7).
"""

from __future__ import annotations

import email.utils
import re
import urllib.parse
from dataclasses import dataclass
from email.header import Header
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compiler import Command, Test
    from .interpreter import _Run
    from .message import SieveMessage

_ADDR_SPEC = re.compile(r"[^\s@<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
#: Header fields of a mailto URI that may not be set (RFC 5436 §2.2), besides the recipients we read.
_UNSAFE_HEADERS = frozenset({"from", "sender", "reply-to", "auto-submitted", "received", "return-path", "date"})


@dataclass(frozen=True, slots=True)
class MailtoUri:
    recipients: tuple[str, ...]
    subject: str | None
    body: str | None


def parse_mailto(uri: str) -> MailtoUri | None:
    """The recipients, subject and body of a ``mailto:`` URI (RFC 6068), or None if it is not one."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() != "mailto":
        return None
    path, _, query = rest.partition("?")
    if "," in path:  # Pigeonhole wants several recipients of the path written "%2C"
        return None
    recipients = [a.strip() for a in urllib.parse.unquote(path).split(",") if a.strip()]
    subject = body = None
    for pair in query.split("&") if query else ():
        name, _, value = pair.partition("=")
        name, value = urllib.parse.unquote(name).lower(), urllib.parse.unquote(value)
        if name in ("to", "cc", "bcc"):
            recipients.extend(a.strip() for a in value.split(",") if a.strip())
        elif name == "subject":
            subject = value
        elif name == "body":
            body = value
        elif name in _UNSAFE_HEADERS:
            continue  # ignored, as RFC 5436 §2.2 asks
    if not all(_ADDR_SPEC.fullmatch(a) for a in recipients):
        return None
    seen: dict[str, str] = {}
    for address in recipients:
        seen.setdefault(address.lower(), address)
    return MailtoUri(tuple(seen.values()), subject, body)


def check_method(uri: str) -> str | None:
    """Why ``uri`` cannot be used as a notification method, or None."""
    if not uri.lower().startswith("mailto:"):
        return f"unsupported notification method '{uri.partition(':')[0]}'"
    if parse_mailto(uri) is None:
        return f"invalid mailto URI '{uri}'"
    return None


@dataclass(frozen=True, slots=True)
class Notify:
    """A notification to send after delivery (RFC 5435 §3)."""

    recipients: tuple[str, ...]
    subject: str | None
    body: str | None
    from_: str | None
    importance: str


def do_notify(run: _Run, cmd: Command) -> None:
    uri = run.expand(cmd.args[0], cmd.line)
    parsed = parse_mailto(uri)
    if parsed is None:
        raise run.error(cmd.line, check_method(uri) or f"invalid mailto URI '{uri}'")
    tags = cmd.tags
    message = run.expand(tags["message"], cmd.line) if "message" in tags else None
    importance = run.expand(tags["importance"], cmd.line) if "importance" in tags else "2"
    notify = Notify(
        recipients=parsed.recipients,
        subject=message if message is not None else parsed.subject,
        body=parsed.body,
        from_=run.expand(tags["from"], cmd.line) if "from" in tags else None,
        importance=importance if importance in ("1", "2", "3") else "2",
    )
    run.ctx.result.add_notify(notify, run.script.name, cmd.line)


def test_valid_notify_method(run: _Run, test: Test) -> bool:
    return all(check_method(uri) is None for uri in run.expand_all(test.args[0], test.line))


def test_notify_method_capability(run: _Run, test: Test) -> bool:
    uri = run.expand(test.args[0], test.line)
    capability = run.expand(test.args[1], test.line).lower()
    if check_method(uri) is not None or capability != "online":
        return False
    # RFC 5436 §3: whether the recipient sees a mailto notification at once is unknown.
    return run.matches(test, ["maybe"], run.expand_all(test.args[2], test.line))


def is_automatic(message: SieveMessage) -> bool:
    """RFC 5436 §2.7: never notify about a message that is itself automatic (``Auto-Submitted``)."""
    return any(v.split(";", 1)[0].strip().lower() != "no" for v in message.header_values("auto-submitted"))


def build_notification(
    notify: Notify, *, message: SieveMessage, sender: str, recipient: str, hostname: str, now: float | None = None
) -> bytes:
    """The notification (CRLF line ends), sent with the null sender; ``:message`` (or the URI's subject)
    is its subject, the URI's body its body, otherwise a line naming the new message."""
    subjects = message.header_values("subject")
    original = subjects[0] if subjects else ""
    subject = notify.subject if notify.subject is not None else f"New mail from {sender or '<>'}: {original}"
    body = notify.body if notify.body is not None else f"From: {sender or '<>'}\nSubject: {original}\n"
    headers = [
        ("Date", email.utils.formatdate(now, localtime=False)),
        ("Message-ID", email.utils.make_msgid(domain=hostname)),
        ("From", _clean(notify.from_ or recipient)),
        ("To", ", ".join(f"<{_clean(r)}>" for r in notify.recipients)),
        ("Subject", Header(_clean(subject), "utf-8").encode() if not subject.isascii() else _clean(subject)),
        ("Auto-Submitted", "auto-notified"),
        ("X-Priority", {"1": "1 (Highest)", "2": "3 (Normal)", "3": "5 (Lowest)"}[notify.importance]),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8")


def _clean(value: str) -> str:
    """Header text never spans lines: no injected fields."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()
