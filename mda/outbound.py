"""Sending mail out through the configured ``submission`` path: an SMTP server, or a sendmail command.

mda never routes mail itself; redirects, vacation replies and DSNs are handed to the MTA in front of it
(docs/configuration.md, ``submission``). Every call is blocking and bounded by a timeout: run it in a worker thread.
A failure raises; the caller decides what it means (a failed redirect keeps the message in INBOX, a failed
vacation reply or DSN is only logged).
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Sequence

from mda.config import SubmissionConfig

DEFAULT_TIMEOUT = 30.0


class SubmissionError(RuntimeError):
    """The submission server or command refused or failed; ``str()`` is safe to log, never to a client."""


def crlf(message: bytes) -> bytes:
    """SMTP DATA lines end with CRLF (RFC 5321 §2.3.8); ``smtplib`` fixes line ends of ``str`` only."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(
    submission: SubmissionConfig,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Submit ``message`` from ``sender`` (``""`` is the null reverse-path ``<>``) to ``recipients``.

    With ``sendmail`` the message goes on standard input with LF line ends, as sendmail(1) expects; with
    ``host``/``port`` it is an SMTP transaction, with ``SMTPUTF8`` asked for when an address needs it
    (RFC 6531 §3.4). A recipient refused by the server fails the whole call.
    """
    if submission.sendmail:
        try:
            subprocess.run(
                [*submission.sendmail, "-f", sender or "<>", "--", *recipients],
                input=message.replace(b"\r\n", b"\n"),
                check=True,
                timeout=timeout,
                capture_output=True,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise SubmissionError(f"sendmail command failed: {error}") from error
        return
    options = ["SMTPUTF8"] if not all(a.isascii() for a in (sender, *recipients)) else []
    try:
        with smtplib.SMTP(submission.host or "127.0.0.1", submission.port, timeout=timeout) as client:
            refused = client.sendmail(sender or "<>", list(recipients), crlf(message), mail_options=options)
    except (OSError, smtplib.SMTPException) as error:
        raise SubmissionError(f"submission to {submission.host}:{submission.port} failed: {error}") from error
    if refused:
        raise SubmissionError(f"submission refused recipients: {', '.join(sorted(refused))}")
