"""Fixtures of the Sieve delivery tests: a private Dovecot (tests/peers/) and an SMTP sink for submission."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.peers.dovecot import dovecot_factory, free_port
from tests.waiting import wait_for

__all__ = ["Received", "Sink", "dovecot_factory", "smtp_sink"]


@dataclass(frozen=True)
class Received:
    """One message the sink accepted: its envelope and content (CRLF line ends as sent)."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass
class Sink:
    """What mda's ``submission`` path delivered; ``port`` goes into ``submission: {host, port}``."""

    port: int
    messages: list[Received] = field(default_factory=list)

    def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The messages once at least ``count`` arrived; ``AssertionError`` when they do not in time."""
        return wait_for(
            lambda: list(self.messages) if len(self.messages) >= count else [],
            timeout,
            what=f"{count} submitted messages",
            describe=lambda: self.messages,
        )


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.sink.messages.append(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), content))
        return "250 2.0.0 OK"


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    """A small aiosmtpd server on a free loopback port that keeps every message it is sent."""
    sink = Sink(free_port())
    controller = Controller(_Handler(sink), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
