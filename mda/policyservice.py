"""Postfix policy delegation (``check_policy_service``): mda's RCPT policy answered to Postfix's smtpd.

Without it, Postfix accepts any local part on port 25 and later bounces what mda refuses at RCPT over
LMTP: backscatter to forged senders. With a ``protocol: policy`` listener, Postfix asks mda during its
own SMTP dialogue and refuses unknown recipients there, so nothing is queued for them.

The protocol (Postfix SMTPD_POLICY_README): the client sends ``name=value`` lines, each ending in LF, and
an empty line ends the request; the server answers one ``action=...`` line and an empty line; the
connection stays open for further requests. Only ``request=smtpd_access_policy`` at
``protocol_state=RCPT`` is judged, from ``recipient`` (and ``size``, Postfix's MAIL FROM SIZE or 0):

- accepted, or a domain that is not ours: ``DUNNO`` (Postfix's other restrictions decide);
- ``550 5.1.1`` unknown user (and a bad address in our domains, ``5.1.3``): ``REJECT 5.1.x ...``;
- another 5xx (``552 5.2.2`` mailbox full): ``552 5.2.2 ...``, the code and text mda would send;
- a 4xx (full with ``quota_full_tempfail``, no space, a failing look-up): ``DEFER_IF_PERMIT 4.x.x ...``,
  refused only if Postfix's other restrictions would accept, and never a bounce.

Any other request or state is answered ``DUNNO``. Malformed input (a line without ``=``, a line longer
than ``MAX_LINE``, more than ``MAX_ATTRIBUTES`` attributes, bytes that are not UTF-8, an empty request)
is logged and the connection closed without an answer: Postfix then logs a warning and applies its
``smtpd_policy_service_default_action`` (``451 4.3.5``, a deferral, by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

from mda import logs, replies
from mda.addresses import AddressError, parse_mailbox
from mda.policy import Resolution
from mda.replies import Reply
from mda.server import ListenerContext

MAX_LINE = 4096
"""Bytes in one ``name=value`` line, LF included. Postfix's longest attributes are certificate subjects
and issuers (a few hundred bytes); an address is at most 256 octets (RFC 5321 §4.5.3.1.3)."""
MAX_ATTRIBUTES = 100
"""Attributes in one request: Postfix 3.7 sends about 35."""
REQUEST = "smtpd_access_policy"
DUNNO = "DUNNO"
TEMPORARY_FAILURE = "DEFER_IF_PERMIT 4.3.0 Temporary lookup failure"
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f]+")


class MalformedRequest(ValueError):
    """Input that is not the policy protocol: the connection is closed after a log line."""


def action_for(resolution: Resolution | None, *, ours: bool) -> str:
    """The ``action=`` value for mda's RCPT answer (the table in the module docstring).

    ``resolution`` None means the address did not parse: refused with ``REJECT 5.1.3`` in our domains
    (mda's LMTP would refuse it too), left to Postfix elsewhere.
    """
    if resolution is None:
        return f"REJECT {replies.BAD_ADDRESS_SYNTAX.enhanced} {replies.BAD_ADDRESS_SYNTAX.text}" if ours else DUNNO
    reply = resolution.reply
    if reply.is_success or reply == replies.RELAY_DENIED:
        return DUNNO
    text = _UNSAFE_TEXT.sub(" ", reply.text).strip()
    if reply.is_temporary:
        return f"DEFER_IF_PERMIT {reply.enhanced} {text}"
    if reply.enhanced == replies.UNKNOWN_USER.enhanced:
        return f"REJECT {reply.enhanced} {text}"
    return f"{reply.code} {reply.enhanced} {text}"


def parse_line(line: bytes) -> tuple[str, str]:
    """One ``name=value`` line (its LF already removed) as text; the value may be empty or hold ``=``."""
    name, sep, value = line.partition(b"=")
    if not sep or not name:
        raise MalformedRequest("a line without name=value")
    try:
        return name.decode("utf-8"), value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("bytes that are not UTF-8") from None


def _size(value: str | None) -> int | None:
    """Postfix sends ``size=0`` when MAIL FROM had no SIZE: that is no size, not an empty message."""
    if value is None or not value.isdigit() or int(value) == 0:
        return None
    return int(value)


class PolicyConnection:
    """One connection from Postfix's smtpd: requests answered in order until it closes.

    It is admitted and counted like a session (``allow``, connection limits, ``mda_sessions_total``), and
    graceful shutdown treats it like one: idle, it is closed at once; while a request is being answered,
    the answer goes out first.
    """

    def __init__(self, context: ListenerContext) -> None:
        self.ctx = context
        self.client_ip = ""
        self.busy = False
        self.in_transaction = False
        self._writer: asyncio.StreamWriter | None = None

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The connection's transport (the listener reads the UNIX peer's credentials from it)."""
        return self._writer.transport if self._writer is not None else None

    @property
    def client(self) -> str:
        """The client as logged: an IP address, or a UNIX peer's pid and uid."""
        return self.ctx.client_of(self)  # type: ignore[arg-type]

    async def reply(self, reply: Reply) -> None:
        """Shutdown's goodbye: the policy protocol has no way to say it, closing the connection is all."""

    def say_goodbye(self, reply: Reply) -> None:
        """Graceful shutdown of an idle connection: nothing to say in this protocol, only close it."""
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        # ListenerContext admits sessions; this connection offers what it reads (client_ip, transport, busy).
        if self.ctx.admit(self) is not None:  # type: ignore[arg-type]
            writer.close()
            return
        try:
            while not self.ctx.shutting_down:
                request = await self._read_request(reader)
                if request is None:
                    break
                self.busy = True
                try:
                    action = await self._decide(request)
                    writer.write(f"action={action}\n\n".encode())
                    await writer.drain()
                finally:
                    self.busy = False
        except MalformedRequest as error:
            logs.event(
                "policy_malformed",
                logging.WARNING,
                listener=self.ctx.config.label,
                client=self.client,
                reason=str(error),
            )
        except (ConnectionError, TimeoutError):
            pass
        except Exception as error:  # a bug must cost this connection only: Postfix then retries or defers
            self._log_error(error)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.ctx.session_closed(self)  # type: ignore[arg-type]

    def _log_error(self, error: BaseException) -> None:
        fields = {"listener": self.ctx.config.label, "client": self.client}
        logs.logger.error("policy_error", exc_info=error, extra={"fields": fields})

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        """The next request's attributes; None when the client closed between requests."""
        attributes: dict[str, str] = {}
        lines = 0
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.ctx.limits.command_timeout)
            except asyncio.LimitOverrunError:
                raise MalformedRequest(f"a line longer than {MAX_LINE} bytes") from None
            except asyncio.IncompleteReadError as error:
                if error.partial or lines:
                    raise MalformedRequest("connection closed inside a request") from None
                return None
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if not attributes:
                    raise MalformedRequest("an empty request")
                return attributes
            lines += 1
            if lines > MAX_ATTRIBUTES:
                raise MalformedRequest(f"more than {MAX_ATTRIBUTES} attributes")
            name, value = parse_line(line)
            attributes[name] = value

    async def _decide(self, request: dict[str, str]) -> str:
        if request.get("request") != REQUEST or request.get("protocol_state", "").upper() != "RCPT":
            return DUNNO
        recipient = request.get("recipient", "")
        if not recipient:
            return DUNNO
        domain = recipient.rpartition("@")[2].lower()
        state = self.ctx.state
        try:
            address = parse_mailbox(recipient)
        except AddressError:
            return action_for(None, ours=domain in state.config.domains)
        loop = asyncio.get_running_loop()
        size = _size(request.get("size"))
        try:
            # Space and quota checks read the disk: off the loop, as a delivery's file work is.
            resolution = await loop.run_in_executor(
                self.ctx.executor, lambda: state.resolve(address, smtputf8=True, size=size)
            )
        except Exception as error:  # a failing lookup defers; it must never turn into a reject
            self._log_error(error)
            return TEMPORARY_FAILURE
        self.ctx.recipient_checked(self, request.get("sender", ""), resolution)  # type: ignore[arg-type]
        return action_for(resolution, ours=True)


def protocol_factory(context: ListenerContext) -> Callable[[], asyncio.BaseProtocol]:
    """What a ``protocol: policy`` listener serves: a stream reader bounded to ``MAX_LINE`` per line."""

    def build() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        return asyncio.StreamReaderProtocol(reader, PolicyConnection(context).run)

    return build
