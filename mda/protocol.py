"""LMTP and SMTP sessions: aiosmtpd's connection plumbing with mda's own command loop and replies.

aiosmtpd 1.4 gets the transport, STARTTLS switch-over and PROXY parsing right but falls short for a
final-delivery agent (shared/aiosmtpd-notes.md): replies without enhanced status codes, one reply after
DATA whatever the recipient count, the whole message held in memory several times, ``555`` for DSN
parameters. ``MdaSession`` therefore keeps aiosmtpd's ``SMTP`` as its base (connection handling) and
replaces the command loop and every command: each reply carries an enhanced code (RFC 2034), DATA is
streamed into a ``Spool`` and answered through one helper that returns exactly one reply per accepted
recipient in LMTP (RFC 2033 §4.2), on every path.

The session translates; it never decides. Recipients go to ``Policy``, copies to ``delivery``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP

from mda import replies
from mda.addresses import AddressError, parse_path
from mda.dataread import BLOCK, DataResult, read_data
from mda.delivery import Outcome, Transaction, deliver, failure_outcomes
from mda.policy import Resolution
from mda.replies import Reply
from mda.spool import Spool
from mda.trace import TraceInfo, new_queue_id, with_protocol

if TYPE_CHECKING:
    from mda.server import ListenerContext

MAX_COMMAND_LINE = 2048
"""RFC 5321 §4.5.3.1.4 allows 512 octets plus what extensions add; accept 2048, refuse longer."""
MAX_UNKNOWN_COMMANDS = 20
"""Unknown or malformed commands tolerated before the connection is closed (``421 4.7.0``)."""
IDENT = "mda"

_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?$")


@dataclass
class Envelope:
    """One transaction's envelope, with the configuration snapshot taken at MAIL."""

    sender: str
    context: Any
    size_hint: int | None = None
    smtputf8: bool = False
    body: str = "7BIT"
    mail_params: dict[str, str] = field(default_factory=dict)
    recipients: list[Resolution] = field(default_factory=list)
    rcpt_params: list[dict[str, str]] = field(default_factory=list)


class _NoHooks:
    """aiosmtpd wants a handler object; every decision here is made by the session itself."""


class MdaSession(SMTP):
    """One client connection on an LMTP or SMTP listener."""

    line_length_limit = BLOCK

    def __init__(self, listener: ListenerContext) -> None:
        self.ctx = listener
        config = listener.state.config
        super().__init__(
            _NoHooks(),
            hostname=config.hostname,
            ident=IDENT,
            enable_SMTPUTF8=True,
            decode_data=False,
            data_size_limit=None,
            timeout=listener.limits.command_timeout,
            loop=asyncio.get_running_loop(),
        )
        self.lmtp = listener.config.protocol == "lmtp"
        self.helo: str | None = None
        self.extended = False
        self.envelope_: Envelope | None = None
        self.busy = False
        self.client_ip = ""
        self._closing_reason: Reply | None = None

    # --- connection ------------------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        """RFC 5321 §4.5.3.2: on timeout the server says ``421`` and closes."""
        if self.transport is not None and not self.busy:
            self.transport.write(f"{replies.TIMEOUT}\r\n".encode())
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        self.ctx.session_closed(self)
        super().connection_lost(error)

    async def reply(self, reply: Reply | str) -> None:
        """Send one reply; text from clients was checked before it got here."""
        self._writer.write(str(reply).encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()

    async def reply_lines(self, code: int, lines: Sequence[str]) -> None:
        """A multi-line reply (``250-...``, ``250 last``) in one write."""
        text = "".join(f"{code}{' ' if i == len(lines) - 1 else '-'}{line}\r\n" for i, line in enumerate(lines))
        self._writer.write(text.encode("utf-8", "surrogateescape"))
        await self._writer.drain()

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        refusal = self.ctx.admit(self)
        if refusal is not None:
            await self.reply(refusal)
            self._close()
            return
        await self.reply(f"220 {self.hostname} {'LMTP' if self.lmtp else 'ESMTP'} {IDENT} ready")
        unknown_left = MAX_UNKNOWN_COMMANDS
        while self.transport is not None and not self.transport.is_closing():
            line = await self._read_command()
            if line is None:
                await self.reply(replies.LINE_TOO_LONG)
                continue
            if self.ctx.shutting_down and not self.busy:
                await self.reply(replies.SHUTTING_DOWN)
                self._close()
                return
            verb, _, arg = line.partition(" ")
            method: Callable[[str], Any] | None = getattr(self, "cmd_" + verb.upper(), None) if verb.isascii() else None
            if method is None or not verb.isalpha():
                unknown_left -= 1
                if unknown_left <= 0:
                    await self.reply(replies.TOO_MANY_UNKNOWN)
                    self._close()
                    return
                await self.reply(replies.UNKNOWN_COMMAND)
                continue
            self._reset_timeout()
            try:
                await method(arg.strip())
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close()
                return
            except Exception as error:  # style.md §13: never "500 Error: (Exc) text" to the client
                self.ctx.log_exception(self, error)
                self.envelope_ = None
                await self.reply(replies.LOCAL_ERROR)

    async def _read_command(self) -> str | None:
        """One command line without its line end, or None when it was too long (and was skipped)."""
        try:
            raw = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self._reader.readexactly(error.consumed)
            while True:
                try:
                    await self._reader.readuntil(b"\n")
                    return None
                except asyncio.LimitOverrunError as more:
                    await self._reader.readexactly(more.consumed)
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise ConnectionResetError from None
            raw = error.partial
        if len(raw) > MAX_COMMAND_LINE:
            return None
        return raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- greeting --------------------------------------------------------------------------------

    def _extensions(self) -> list[str]:
        limits = self.ctx.limits
        return [
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            f"SIZE {limits.max_message_size}",
            "SMTPUTF8",
        ]

    async def _greet(self, arg: str, *, extended: bool) -> None:
        if not arg or any(ord(c) < 33 for c in arg):
            await self.reply(replies.PARAM_SYNTAX.with_text("Syntax: hostname required"))
            return
        self.helo = arg
        self.extended = extended
        self.envelope_ = None
        if extended:
            await self.reply_lines(250, [self.hostname, *self._extensions()])
        else:
            await self.reply(f"250 {self.hostname}")

    async def cmd_LHLO(self, arg: str) -> None:
        if not self.lmtp:
            await self.reply(replies.NOT_LMTP)
            return
        await self._greet(arg, extended=True)

    async def cmd_EHLO(self, arg: str) -> None:
        if self.lmtp:
            await self.reply(replies.LHLO_ONLY)
            return
        await self._greet(arg, extended=True)

    async def cmd_HELO(self, arg: str) -> None:
        if self.lmtp:
            await self.reply(replies.LHLO_ONLY)
            return
        await self._greet(arg, extended=False)

    # --- simple commands -------------------------------------------------------------------------

    async def cmd_NOOP(self, arg: str) -> None:
        await self.reply(replies.NOOP_OK)

    async def cmd_RSET(self, arg: str) -> None:
        if arg:
            await self.reply(replies.PARAM_SYNTAX)
            return
        self.envelope_ = None
        await self.reply(replies.RESET_OK)

    async def cmd_QUIT(self, arg: str) -> None:
        await self.reply(replies.BYE)
        self._close()

    async def cmd_VRFY(self, arg: str) -> None:
        await self.reply(replies.VRFY_CANNOT if arg else replies.PARAM_SYNTAX)

    async def cmd_EXPN(self, arg: str) -> None:
        await self.reply(replies.EXPN_REFUSED)

    async def cmd_HELP(self, arg: str) -> None:
        await self.reply(replies.HELP)

    # --- envelope --------------------------------------------------------------------------------

    def _params(self, text: str) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for item in text.split():
            match = _PARAM.match(item)
            if not match:
                return None
            params[match.group(1).upper()] = match.group(2) or ""
        return params

    async def cmd_MAIL(self, arg: str) -> None:
        if self.helo is None:
            await self.reply(replies.NEED_HELO)
            return
        if self.envelope_ is not None:
            await self.reply(replies.NESTED_MAIL)
            return
        if arg[:5].upper() != "FROM:":
            await self.reply(replies.SYNTAX_ERROR.with_text("Syntax: MAIL FROM:<address>"))
            return
        try:
            address, param_text = parse_path(arg[5:])
        except AddressError:
            await self.reply(replies.BAD_SENDER_SYNTAX)
            return
        params = self._params(param_text)
        if params is None:
            await self.reply(replies.PARAM_SYNTAX)
            return
        refusal = self._check_mail_params(params)
        if refusal is not None:
            await self.reply(refusal)
            return
        smtputf8 = "SMTPUTF8" in params
        if address is not None and not address.is_ascii and not smtputf8:
            await self.reply(replies.NEEDS_SMTPUTF8)
            return
        self.envelope_ = Envelope(
            sender=str(address) if address else "",
            context=self.ctx.state,
            size_hint=int(params["SIZE"]) if params.get("SIZE") else None,
            smtputf8=smtputf8,
            body=params.get("BODY", "7BIT").upper(),
            mail_params=params,
        )
        await self.reply(replies.SENDER_OK)

    def _check_mail_params(self, params: dict[str, str]) -> Reply | None:
        for name, value in params.items():
            if name == "SIZE":
                if not value.isdigit():
                    return replies.PARAM_SYNTAX
                if int(value) > self.ctx.limits.max_message_size:
                    return replies.MESSAGE_TOO_BIG
            elif name == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return replies.PARAM_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME")
            elif name == "SMTPUTF8":
                if value:
                    return replies.PARAM_SYNTAX
            elif name in ("RET", "ENVID", "AUTH"):
                # DSN (RFC 3461) and AUTH (RFC 4954) parameters are accepted, never refused with 555.
                continue
            else:
                return replies.PARAM_UNKNOWN
        return None

    async def cmd_RCPT(self, arg: str) -> None:
        envelope = self.envelope_
        if envelope is None:
            await self.reply(replies.NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            await self.reply(replies.SYNTAX_ERROR.with_text("Syntax: RCPT TO:<address>"))
            return
        try:
            address, param_text = parse_path(arg[3:])
        except AddressError:
            await self.reply(replies.BAD_ADDRESS_SYNTAX)
            return
        if address is None:
            await self.reply(replies.BAD_ADDRESS_SYNTAX)
            return
        params = self._params(param_text)
        if params is None:
            await self.reply(replies.PARAM_SYNTAX)
            return
        if any(name not in ("NOTIFY", "ORCPT") for name in params):
            await self.reply(replies.PARAM_UNKNOWN)
            return
        if len(envelope.recipients) >= self.ctx.limits.max_recipients:
            await self.reply(replies.TOO_MANY_RECIPIENTS)
            return
        resolution = envelope.context.resolve(address, smtputf8=envelope.smtputf8, size=envelope.size_hint)
        self.ctx.recipient_checked(self, envelope.sender, resolution)
        if resolution.accepted:
            envelope.recipients.append(resolution)
            envelope.rcpt_params.append(params)
        await self.reply(resolution.reply)

    # --- data ------------------------------------------------------------------------------------

    async def cmd_DATA(self, arg: str) -> None:
        envelope = self.envelope_
        if arg:
            await self.reply(replies.PARAM_SYNTAX)
            return
        if envelope is None:
            await self.reply(replies.NEED_MAIL)
            return
        if not envelope.recipients:
            await self.reply(replies.NEED_RCPT)
            return
        await self.reply(replies.START_DATA)
        self.busy = True
        self.envelope_ = None
        spool = Spool(self.ctx.spool_dir)
        try:
            self._reset_timeout(self.ctx.limits.data_timeout)
            data = await read_data(
                self._reader,
                spool,
                max_size=self.ctx.limits.max_message_size,
                normalize_bare=envelope.context.config.bare_newline == "normalize",
            )
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            outcomes = await self._deliver(envelope, spool, data)
        finally:
            spool.close()
            self.busy = False
            self._reset_timeout()
        await self._send_data_replies(outcomes)
        if self.ctx.shutting_down:
            await self.reply(replies.SHUTTING_DOWN)
            self._close()

    async def _deliver(self, envelope: Envelope, spool: Spool, data: DataResult) -> Sequence[Outcome]:
        """Deliver and report; every failure becomes outcomes, one per accepted recipient."""
        context = envelope.context
        queue_id = new_queue_id()
        txn = Transaction(
            queue_id=queue_id,
            sender=envelope.sender,
            recipients=envelope.recipients,
            trace=TraceInfo(
                sender=envelope.sender,
                helo=self.helo or "",
                client_ip=self.client_ip,
                hostname=self.hostname,
                protocol=with_protocol(
                    lmtp=self.lmtp,
                    extended=self.extended,
                    tls=self.session.ssl is not None if self.session else False,
                    auth=False,
                    utf8=envelope.smtputf8,
                ),
                queue_id=queue_id,
                timestamp=time.time(),
            ),
        )
        try:
            outcomes = await deliver(context.config, txn, spool, data, lmtp=self.lmtp, executor=self.ctx.executor)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.ctx.log_exception(self, error)
            outcomes = failure_outcomes(txn, error)
        self.ctx.delivered(self, txn, data, outcomes)
        return outcomes

    async def _send_data_replies(self, outcomes: Sequence[Outcome]) -> None:
        """LMTP: exactly one reply per accepted RCPT, in order (RFC 2033 §4.2). SMTP: one reply."""
        lines = data_replies(outcomes, lmtp=self.lmtp)
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape"))
        await self._writer.drain()


def data_replies(outcomes: Sequence[Outcome], *, lmtp: bool) -> list[Reply]:
    """The replies for one DATA: per recipient in LMTP, the single shared one in SMTP."""
    return [outcome.reply for outcome in outcomes] if lmtp else [outcomes[0].reply]
