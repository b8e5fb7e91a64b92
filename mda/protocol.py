"""LMTP and SMTP sessions: aiosmtpd's connection plumbing with mda's own command loop and replies.

aiosmtpd 1.4 gets the transport, STARTTLS switch-over and PROXY parsing right but falls short for a
final-delivery agent: replies without enhanced status codes, one reply after
DATA whatever the recipient count, the whole message held in memory several times, ``555`` for DSN
parameters. ``MdaSession`` therefore keeps aiosmtpd's ``SMTP`` as its base (connection handling) and
replaces the command loop and every command: each reply carries an enhanced code (RFC 2034), DATA is
streamed into a ``Spool`` and answered through one helper that returns exactly one reply per accepted
recipient in LMTP (RFC 2033 §4.2), on every path.

The session translates; it never decides. Recipients go to ``Policy``, copies to ``delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiosmtpd.proxy_protocol import V2_CMD, get_proxy
from aiosmtpd.smtp import SMTP

from mda import dsn, logs, replies
from mda.addresses import AddressError, parse_path
from mda.auth import Credentials, Throttle, decode_base64_text, decode_plain, verifier
from mda.dataread import BLOCK, STREAM_LIMIT, ChunkReader, DataResult, read_data
from mda.delivery import Outcome, Transaction, deliver, failure_outcomes
from mda.policy import Resolution
from mda.replies import Reply
from mda.spool import Spool
from mda.tls import TlsUnavailable, server_context
from mda.tls import available as tls_available
from mda.trace import TraceInfo, new_queue_id, with_protocol

if TYPE_CHECKING:
    from mda.server import ListenerContext

MAX_COMMAND_LINE = 2048
"""RFC 5321 §4.5.3.1.4 allows 512 octets plus what extensions add; accept 2048, refuse longer."""
ERROR_LIMIT_DRAIN = 1024 * 1024
"""Input read (and dropped) after the error limit's ``421``, at most for two seconds: a pipelined burst of
commands, so that closing does not reset the connection before the client has read its replies."""
MAX_UNKNOWN_COMMANDS = 20
"""Unknown or malformed commands tolerated before the connection is closed (``421 4.7.0``)."""
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "LHLO", "EHLO", "HELO"})
"""Commands that move no mail; past ``junk_command_limit`` each counts as an error (Postfix's list, which
also has ETRN; ``BDAT 0`` without LAST is counted by ``cmd_BDAT``)."""
IDENT = "mda"
MAX_BDAT_CHUNK = 2**40
"""A BDAT size with more digits than this is a syntax error rather than a reason to read forever."""

_THROTTLE = Throttle()
"""AUTH attempts per client address, shared by every session of this process."""
_CREDENTIALS: dict[str, Credentials] = {}
_BACKGROUND: set[asyncio.Task[None]] = set()
"""Success notifications being sent (kept referenced until done)."""

_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?$")


@dataclass
class Envelope:
    """One transaction's envelope, with the configuration snapshot taken at MAIL."""

    sender: str
    context: Any
    size_hint: int | None = None
    smtputf8: bool = False
    recipients: list[Resolution] = field(default_factory=list)
    rcpt_params: list[dict[str, str]] = field(default_factory=list)
    """The RCPT parameters (``NOTIFY``, ``ORCPT``) of each accepted recipient, parallel to ``recipients``."""
    ret: str | None = None
    envid: str | None = None
    chunks: ChunkReader | None = None
    """BDAT: the message being received in chunks (RFC 3030), closed on RSET, LAST or hang-up."""

    def drop_chunks(self) -> None:
        if self.chunks is not None:
            self.chunks.spool.close()
        self.chunks = None


class _NoHooks:
    """aiosmtpd wants a handler object; every decision here is made by the session itself."""


class MdaSession(SMTP):
    """One client connection on an LMTP or SMTP listener."""

    line_length_limit = STREAM_LIMIT

    def __dir__(self) -> list[str]:
        """Nothing for aiosmtpd's start-up reflection to find.

        ``SMTP.__init__`` walks ``dir(self)`` and ``inspect.getmembers(self)`` looking for ``smtp_*``
        and ``auth_*`` methods, about 200 µs per connection; the session has none of those (its
        commands are ``cmd_*`` and AUTH lives in ``mda.auth``), so an empty listing skips the walk.
        """
        return []

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
        self.authenticated: str | None = None
        self._delivering = False
        self._hard_errors, self._junk_limit = listener.limits.error_limits(listener.config.protocol)
        self._errors = 0
        """Error replies (4xx/5xx to a command) since the session began or last delivered a message."""
        self._junk = 0
        self._write_blocked = False
        self._released = False
        self._linger: asyncio.TimerHandle | None = None

    # --- connection ------------------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        """RFC 5321 §4.5.3.2: on timeout the server says ``421`` and closes.

        The timer runs from the start of one command (or of DATA) and is not reset by partial input, so
        a client trickling one byte a second is timed out too. It is stopped while a delivery runs.
        A client that stopped reading our replies (the transport paused writing) cannot be told anything
        and a graceful close would wait for it forever: the connection is aborted, as Postfix and Dovecot
        do on a write timeout.
        """
        transport = self.transport
        if transport is None or self._delivering:
            return
        if self._write_blocked:
            _abort(transport)
            return
        with contextlib.suppress(Exception):
            self._writer.write(f"{replies.TIMEOUT}\r\n".encode())
        self._close()

    def pause_writing(self) -> None:
        self._write_blocked = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self._write_blocked = False
        super().resume_writing()

    def eof_received(self) -> bool | None:
        """The client closed its side: close ours. aiosmtpd only cancels the command loop here and keeps
        the transport half-open, so without this ``connection_lost`` never comes and the session leaks
        (connection limits, graceful shutdown)."""
        super().eof_received()
        self._close()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self._release()
        super().connection_lost(error)

    def _release(self) -> None:
        """Free the session's connection slot, once, whichever way the session ends.

        ``connection_lost`` does not come on every path (asyncio's TLS layer never reports it after a
        failed STARTTLS handshake), so the end of the command loop releases the slot too.
        """
        self._drop_transaction()
        if not self._released:
            self._released = True
            self.ctx.session_closed(self)

    @property
    def tls_active(self) -> bool:
        """STARTTLS done, or an implicit-TLS listener (aiosmtpd leaves ``session.ssl`` None then)."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _current_listener(self) -> Any:
        """This listener's entry in the current configuration (so a reload's new cert paths count)."""
        same = [
            listener
            for listener in self.ctx.state.config.listeners
            if listener.bind == self.ctx.config.bind and listener.protocol == self.ctx.config.protocol
        ]
        # Several listeners on port 0 share one bind text: then only the listener's own entry is certain.
        return same[0] if len(same) == 1 else self.ctx.config

    async def reply(self, reply: Reply | str) -> None:
        """Send one reply; text from clients was checked before it got here. A 4xx or 5xx counts as an
        error of the session (``hard_error_limit``)."""
        text = str(reply)
        if text[:1] in ("4", "5"):
            self._errors += 1
        self._writer.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
        await self._writer.drain()

    async def reply_lines(self, code: int, lines: Sequence[str]) -> None:
        """A multi-line reply (``250-...``, ``250 last``) in one write."""
        text = "".join(f"{code}{' ' if i == len(lines) - 1 else '-'}{line}\r\n" for i, line in enumerate(lines))
        self._writer.write(text.encode("utf-8", "surrogateescape"))
        await self._writer.drain()

    async def _handle_client(self) -> None:
        """The session, from greeting to close; however it ends, the connection goes and the slot is freed."""
        try:
            await self._serve()
        finally:
            self._close()
            self._release()

    async def _serve(self) -> None:
        peer = self.session.peer if self.session else None
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        if self.ctx.config.proxy_protocol and not await self._read_proxy_header():
            self._close()
            return
        refusal = self.ctx.admit(self)
        if refusal is not None:
            await self.reply(refusal)
            self._close()
            return
        await self.reply(f"220 {self.hostname} {'LMTP' if self.lmtp else 'ESMTP'} {IDENT} ready")
        unknown_left = MAX_UNKNOWN_COMMANDS
        while self.transport is not None and not self.transport.is_closing():
            if self._hard_errors and self._errors >= self._hard_errors:
                # Postfix smtpd_hard_error_limit: checked before reading the next command.
                self.ctx.error_limit_reached(self, self._errors)
                await self.reply(replies.TOO_MANY_ERRORS)
                # A pipelining client is still sending: closing on its unread commands would reset the
                # connection and lose replies already written (the refusals and this 421).
                await self._drain_before_close(most=ERROR_LIMIT_DRAIN)
                self._close()
                return
            try:
                line = await self._read_command()
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close()
                return
            method: Callable[[str], Any] | None = None
            if line is None or not _clean_command(line):
                refusal = replies.LINE_TOO_LONG if line is None else replies.BAD_COMMAND_BYTES
            else:
                if self.ctx.shutting_down and not self.busy:
                    await self.reply(replies.SHUTTING_DOWN)
                    self._close()
                    return
                verb, _, arg = line.partition(" ")
                if verb.isascii() and verb.isalpha():
                    method = getattr(self, "cmd_" + verb.upper(), None)
                    if method is not None and verb.upper() in JUNK_COMMANDS:
                        self._count_junk()
                refusal = replies.UNKNOWN_COMMAND
            if method is None:
                unknown_left -= 1
                if unknown_left <= 0:
                    await self.reply(replies.TOO_MANY_UNKNOWN)
                    await self._drain_before_close(most=ERROR_LIMIT_DRAIN)
                    self._close()
                    return
                await self.reply(refusal)
                continue
            self._reset_timeout()
            try:
                await method(arg.strip())
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close()
                return
            except Exception as error:  # never "500 Error: (Exc) text" to the client (README, "What a reply promises")
                self.ctx.log_exception(self, error)
                self._drop_transaction()
                await self.reply(replies.LOCAL_ERROR)

    def _count_junk(self) -> None:
        """Postfix smtpd_junk_command_limit: past the limit, each command that moves no mail is an error."""
        self._junk += 1
        if self._junk_limit and self._junk > self._junk_limit:
            self._errors += 1

    async def _read_proxy_header(self) -> bool:
        """PROXY protocol v1 or v2 (HAProxy's proxy-protocol.txt), before the greeting.

        Only a peer in the listener's ``proxy_trusted`` networks may speak for its clients; any other peer
        gets ``554 5.7.1`` before it can send a header, and is closed (README, "Protocol"). From a trusted
        peer the header is required: a connection without a valid one is closed without a word (the peer
        is a load balancer, not a mail client). The source address it carries is the client for logs,
        ``allow``, connection limits, the AUTH penalty and ``Received``. Without a usable address (a v2
        ``LOCAL`` health check, v1 ``UNKNOWN``, v2 ``UNSPEC`` or ``AF_UNIX``) the connection's own address
        stays the client: a UNIX socket path on the proxy's side is no address of ours to trace.
        """
        listener = self.ctx.config
        if not listener.trusts_proxy(self.client_ip):
            self.ctx.app.reporter.connection_refused(listener, self.client_ip, "proxy_untrusted")
            await self.reply(replies.CLIENT_DENIED.with_text("PROXY header not accepted from this address"))
            await self._drain_before_close()
            return False
        self._reset_timeout(self.ctx.limits.command_timeout)
        try:
            proxy = await get_proxy(self._reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        if self.session is not None:
            self.session.proxy_data = proxy
        if not proxy.valid:
            self.ctx.log_exception(self, ValueError(f"invalid PROXY header: {proxy.error}"))
            return False
        if proxy.command != V2_CMD.LOCAL and isinstance(proxy.src_addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            self.client_ip = str(proxy.src_addr)
        self._reset_timeout()
        return True

    async def _drain_before_close(self, seconds: float = 2.0, most: int = BLOCK) -> None:
        """Send FIN and read what the peer already sent (up to ``most`` bytes, ``seconds``) before closing.

        Closing a socket with unread input makes the kernel send RST, which can destroy the refusal still
        on its way to the peer; a proxy sends its header at once, so there is always unread input here.
        """
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport) or not transport.can_write_eof():
            return
        transport.write_eof()
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            async with asyncio.timeout(seconds):
                while most > 0 and (chunk := await self._reader.read(min(most, BLOCK))):
                    most -= len(chunk)

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

    def say_goodbye(self, reply: Reply) -> None:
        """Send ``reply`` and close without waiting for the client to read it: graceful shutdown must not
        stall on a client that stopped reading (that one is dropped at once)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._write_blocked:
            _abort(transport)
            return
        self._writer.write(f"{reply}\r\n".encode())
        self._close()

    def _close(self) -> None:
        """Close after what is buffered is sent; a client that does not read it within
        ``command_timeout`` is cut off (``transport.close`` alone would wait for it forever)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            self._linger = self.loop.call_later(self.ctx.limits.command_timeout, _abort, transport)

    # --- greeting --------------------------------------------------------------------------------

    def _extensions(self) -> list[str]:
        limits = self.ctx.limits
        listener = self._current_listener()
        keywords = [
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            f"SIZE {limits.max_message_size}",
            "SMTPUTF8",
            "CHUNKING",
        ]
        if (
            listener.tls is not None
            and listener.tls.mode == "starttls"
            and not self.tls_active
            and tls_available(listener.tls)
        ):
            keywords.append("STARTTLS")
        if listener.auth is not None and self.tls_active and self.authenticated is None:
            keywords.append("AUTH PLAIN LOGIN")
        if self.ctx.state.config.submission is not None and listener.success_dsn:
            keywords.append("DSN")
        return keywords

    async def _greet(self, arg: str, *, extended: bool) -> None:
        if not arg or any(ord(c) < 33 for c in arg):
            await self.reply(replies.PARAM_SYNTAX.with_text("Syntax: hostname required"))
            return
        self.helo = arg
        self.extended = extended
        self._drop_transaction()
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
        self._drop_transaction()
        await self.reply(replies.RESET_OK)

    def _drop_transaction(self) -> None:
        if self.envelope_ is not None:
            self.envelope_.drop_chunks()
        self.envelope_ = None

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
            if not match or match.group(1).upper() in params:
                return None  # RFC 5321 §4.1.2 grammar; a parameter given twice is ambiguous
            params[match.group(1).upper()] = match.group(2) or ""
        return params

    def _gate(self) -> Reply | None:
        """``530 5.7.0`` before STARTTLS (``require_tls``, RFC 3207 §4) or before AUTH (RFC 4954 §6)."""
        listener = self._current_listener()
        if listener.require_tls and not self.tls_active:
            return replies.TLS_REQUIRED
        if listener.auth is not None and listener.auth.required and self.authenticated is None:
            return replies.AUTH_REQUIRED
        return None

    async def cmd_MAIL(self, arg: str) -> None:
        if self.helo is None:
            await self.reply(replies.NEED_HELO)
            return
        if self.envelope_ is not None:
            await self.reply(replies.NESTED_MAIL)
            return
        gate = self._gate()
        if gate is not None:
            await self.reply(gate)
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
            ret=dsn.check_ret(params["RET"]) if "RET" in params else None,
            envid=dsn.check_envid(params["ENVID"]) if "ENVID" in params else None,
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
            elif name in ("RET", "ENVID"):
                # DSN (RFC 3461 §4.3, §4.4) parameters are accepted whatever is announced, and checked.
                try:
                    dsn.check_ret(value) if name == "RET" else dsn.check_envid(value)
                except dsn.DsnSyntaxError:
                    return replies.PARAM_SYNTAX.with_text(f"Bad {name} parameter")
            elif name == "AUTH":
                # RFC 4954 §5: AUTH=<mailbox> on MAIL is accepted (and, as we never relay, not used).
                continue
            else:
                return replies.PARAM_UNKNOWN
        return None

    @staticmethod
    def _primary_domain(envelope: Envelope) -> str:
        """The domain ``RCPT TO:<Postmaster>`` means (RFC 5321 §4.5.1): the first one configured."""
        domain: str = next(iter(envelope.context.config.domains))
        return domain

    async def cmd_RCPT(self, arg: str) -> None:
        envelope = self.envelope_
        if envelope is None:
            await self.reply(replies.NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            await self.reply(replies.SYNTAX_ERROR.with_text("Syntax: RCPT TO:<address>"))
            return
        try:
            address, param_text = parse_path(arg[3:], postmaster_domain=self._primary_domain(envelope))
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
        try:
            if "NOTIFY" in params:
                dsn.check_notify(params["NOTIFY"])
            if "ORCPT" in params:
                dsn.check_orcpt(params["ORCPT"])
        except dsn.DsnSyntaxError as error:
            await self.reply(replies.PARAM_SYNTAX.with_text(f"Bad DSN parameter: {error}"))
            return
        if envelope.chunks is not None:
            await self.reply(replies.IN_TRANSACTION.with_text("RCPT not allowed after BDAT"))
            return
        if len(envelope.recipients) >= self.ctx.limits.max_recipients:
            await self.reply(replies.TOO_MANY_RECIPIENTS)
            return
        resolution = await envelope.context.resolve_async(address, smtputf8=envelope.smtputf8, size=envelope.size_hint)
        self.ctx.recipient_checked(self, envelope.sender, resolution)
        if resolution.accepted:
            envelope.recipients.append(resolution)
            envelope.rcpt_params.append(params)
        await self.reply(resolution.reply)

    # --- STARTTLS (RFC 3207) and AUTH (RFC 4954) ------------------------------------------------

    async def cmd_STARTTLS(self, arg: str) -> None:
        """Switch to TLS with aiosmtpd's mechanism (``SMTP.smtp_STARTTLS``), replies with enhanced codes.

        aiosmtpd's ``connection_made`` then runs again for the TLS transport: it drops whatever plaintext
        the client pipelined after STARTTLS (RFC 3207 §5, command injection) and starts a new session.
        Everything learnt before is forgotten (RFC 3207 §4.2): the client must LHLO/EHLO again.
        """
        listener = self._current_listener()
        if arg:
            await self.reply(replies.PARAM_SYNTAX)
            return
        if self.tls_active:
            await self.reply(replies.TLS_ALREADY)
            return
        if listener.tls is None or listener.tls.mode != "starttls":
            await self.reply(replies.UNKNOWN_COMMAND)
            return
        if self.envelope_ is not None:
            await self.reply(replies.IN_TRANSACTION)
            return
        try:
            context = server_context(listener.tls)
        except TlsUnavailable as error:
            self.ctx.log_exception(self, error)
            await self.reply(replies.TLS_UNAVAILABLE)
            return
        await self.reply(replies.TLS_READY)
        self.helo = None
        self.extended = False
        self.authenticated = None
        self._drop_transaction()
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, context, waiter, server_side=True)
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except (ssl.SSLError, OSError, EOFError) as error:
            # The client gave up or spoke no TLS: nothing more can be said in plaintext (RFC 3207 §4.1).
            # asyncio's TLS layer never calls connection_lost after a failed handshake: end the session here.
            self.ctx.log_exception(self, error)
            _abort(self._original_transport)
            raise ConnectionAbortedError("TLS handshake failed") from error
        if self.transport is None or self.transport.is_closing():
            _abort(self._original_transport)  # closed during the handshake (timeout): the waiter got no error
            raise ConnectionAbortedError("closed during the TLS handshake")

    async def cmd_AUTH(self, arg: str) -> None:
        """AUTH PLAIN (RFC 4616) and LOGIN, over TLS only (RFC 4954 §4: no plaintext passwords)."""
        listener = self._current_listener()
        if listener.auth is None or listener.auth.users_file is None:
            await self.reply(replies.AUTH_NOT_AVAILABLE)
            return
        if self.helo is None:
            await self.reply(replies.NEED_HELO)
            return
        if self.authenticated is not None:
            await self.reply(replies.AUTH_ALREADY)
            return
        if self.envelope_ is not None:
            await self.reply(replies.IN_TRANSACTION)
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            await self.reply(replies.AUTH_MECHANISM)
            return
        if not self.tls_active:
            await self.reply(replies.AUTH_NEEDS_TLS)
            return
        initial = initial.strip()
        if mechanism == "PLAIN":
            response = initial if initial and initial != "=" else await self._challenge("")
            if response is None:
                return
            pair = decode_plain(response)
        else:
            user_text = initial or await self._challenge("VXNlcm5hbWU6")  # "Username:"
            if user_text is None:
                return
            user = decode_base64_text(user_text)
            password_text = await self._challenge("UGFzc3dvcmQ6")  # "Password:"
            if password_text is None:
                return
            password = decode_base64_text(password_text)
            pair = (user, password) if user and password is not None else None
        if pair is None:
            await self.reply(replies.AUTH_BAD_BASE64)
            return
        await self._check_credentials(listener.auth.users_file, mechanism, *pair)

    async def _challenge(self, text: str) -> str | None:
        """Send ``334 text``, read the client's line; None (after replying) when cancelled or too long."""
        await self.reply(f"334 {text}")
        line = await self._read_command()
        if line is None:
            await self.reply(replies.LINE_TOO_LONG)
            return None
        if line.strip() == "*":
            await self.reply(replies.AUTH_CANCELLED)
            return None
        return line.strip()

    async def _check_credentials(self, users_file: Any, mechanism: str, user: str, password: str) -> None:
        """Wait out this address's penalty, then check the password in the AUTH threads (``mda.auth``).

        The wait comes first (Dovecot's ``auth_penalty``): a client that hangs up instead of waiting for
        ``535`` has gained nothing. Every failure is logged as ``auth_failed`` with the client address,
        the user as sent (escaped) and the mechanism, for fail2ban (README, "Protocol").
        """
        credentials = _CREDENTIALS.setdefault(str(users_file), Credentials(users_file))
        delay = _THROTTLE.attempt(self.client_ip)
        if delay:
            self._reset_timeout(self.ctx.limits.command_timeout + delay)
            await asyncio.sleep(delay)
        ok = await asyncio.get_running_loop().run_in_executor(verifier(), credentials.verify, user, password)
        if ok:
            _THROTTLE.succeeded(self.client_ip)
            self.authenticated = user
            await self.reply(replies.AUTH_OK)
            return
        logs.event(
            "auth_failed",
            logging.WARNING,
            client=self.client_ip,
            user=user,
            mechanism=mechanism,
            listener=self.ctx.config.label,
        )
        await self.reply(replies.AUTH_FAILED)  # RFC 4954 §4: 535 5.7.8

    # --- data ------------------------------------------------------------------------------------

    async def cmd_DATA(self, arg: str) -> None:
        envelope = self.envelope_
        if arg:
            await self.reply(replies.PARAM_SYNTAX)
            return
        if envelope is None:
            await self.reply(replies.NEED_MAIL)
            return
        if envelope.chunks is not None:
            await self.reply(replies.DATA_AFTER_BDAT)
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
                max_header_size=self.ctx.limits.max_header_size,
            )
            outcomes = await self._deliver(envelope, spool, data)
        finally:
            spool.close()
            self.busy = False
            self._reset_timeout()
        await self._answer_data(outcomes)

    async def cmd_BDAT(self, arg: str) -> None:
        """RFC 3030 CHUNKING: ``BDAT <size> [LAST]``, the octets follow the command line at once.

        Every chunk is read, even one that is refused (no MAIL, no recipient), so the session stays in
        step with a pipelining client (RFC 3030 §3). The chunks are decoded through the same sink as DATA
        (CRLF → LF, bare CR/LF counted; no dot-stuffing) into one spool; ``LAST`` delivers and answers
        like the end of DATA: one reply per accepted recipient in LMTP.
        """
        words = arg.split()
        if (
            not 1 <= len(words) <= 2
            or not words[0].isdigit()
            or len(words[0]) > len(str(MAX_BDAT_CHUNK))
            or [word.upper() for word in words[1:]] not in ([], ["LAST"])
        ):
            await self.reply(replies.PARAM_SYNTAX.with_text("Syntax: BDAT <size> [LAST]"))
            return
        size, last = int(words[0]), len(words) == 2
        if size == 0 and not last:
            self._count_junk()
        envelope = self.envelope_
        self._reset_timeout(self.ctx.limits.data_timeout)
        if envelope is None or not envelope.recipients:
            await self._discard(size)
            self._reset_timeout()
            await self.reply(replies.NEED_MAIL if envelope is None else replies.NEED_RCPT)
            return
        if envelope.chunks is None:
            envelope.chunks = ChunkReader(
                Spool(self.ctx.spool_dir),
                max_size=self.ctx.limits.max_message_size,
                normalize_bare=envelope.context.config.bare_newline == "normalize",
                max_header_size=self.ctx.limits.max_header_size,
            )
        self.busy = True
        try:
            await envelope.chunks.read_chunk(self._reader, size)
            if not last:
                self._reset_timeout()
                await self.reply(replies.CHUNK_OK.with_text(f"{size} octets received"))
                return
            self.envelope_ = None
            outcomes = await self._deliver(envelope, envelope.chunks.spool, envelope.chunks.finish())
        except BaseException:
            self.envelope_ = None
            raise
        finally:
            self.busy = False
            if self.envelope_ is None:  # delivered, or failed: the spool goes either way
                envelope.drop_chunks()
                self._reset_timeout()
        await self._answer_data(outcomes)

    async def _discard(self, size: int) -> None:
        while size:
            size -= len(await self._reader.readexactly(min(size, BLOCK)))

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
                    tls=self.tls_active,
                    auth=self.authenticated is not None,
                    utf8=envelope.smtputf8,
                ),
                queue_id=queue_id,
                timestamp=time.time(),
                original_to=tuple(
                    (resolution.address, dsn.check_orcpt(params["ORCPT"])[1])
                    for resolution, params in zip(envelope.recipients, envelope.rcpt_params, strict=True)
                    if "ORCPT" in params
                ),
            ),
        )
        # The command timer stops while the copies are written (and ``_timeout_cb`` stays quiet).
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._delivering = True
        try:
            outcomes = await deliver(context.config, txn, spool, data, lmtp=self.lmtp, executor=self.ctx.executor)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.ctx.log_exception(self, error)
            outcomes = failure_outcomes(txn, error)
        finally:
            self._delivering = False
        self.ctx.delivered(self, txn, data, outcomes)
        self._notify_success(envelope, txn, spool, outcomes)
        return outcomes

    def _notify_success(self, envelope: Envelope, txn: Transaction, spool: Spool, outcomes: Sequence[Outcome]) -> None:
        """RFC 3461 §5.2.2: a "delivered" DSN for each NOTIFY=SUCCESS recipient that was delivered.

        Only with a ``submission`` path on a listener with ``success_dsn`` (``DSN`` is announced only then)
        and a non-null sender. In SMTP the single reply is every recipient's outcome. The report is built
        now, while the spool is open, and sent in a worker thread: the client's replies never wait for it,
        a failure is logged. It returns at most ``dsn_size_limit`` bytes of the message, so a sender
        cannot use mda to reflect large messages to a forged address.
        """
        config = envelope.context.config
        submission = config.submission
        if submission is None or not envelope.sender or not self._current_listener().success_dsn:
            return
        shared = outcomes[0].reply.is_success if outcomes else False
        delivered = []
        for index, (resolution, params) in enumerate(zip(envelope.recipients, envelope.rcpt_params, strict=True)):
            ok = (outcomes[index].reply.is_success if index < len(outcomes) else False) if self.lmtp else shared
            if not ok or "SUCCESS" not in dsn.check_notify(params.get("NOTIFY", "FAILURE")):
                continue
            original_type, original = dsn.check_orcpt(params["ORCPT"]) if "ORCPT" in params else ("rfc822", None)
            delivered.append(dsn.DeliveredRecipient(resolution.address, original, original_type))
        if not delivered:
            return
        full = spool.read_all() if envelope.ret == "FULL" and spool.size <= config.dsn_size_limit else None
        report = dsn.success_report(
            reporting_mta=self.hostname,
            sender=envelope.sender,
            recipients=delivered,
            envid=envelope.envid,
            ret=envelope.ret,
            queue_id=txn.queue_id,
            header_section=spool.header_section(),
            full_message=full,
            size_limit=config.dsn_size_limit,
        )
        loop = asyncio.get_running_loop()

        async def send() -> None:
            try:
                await loop.run_in_executor(self.ctx.executor, dsn.submit, submission, envelope.sender, report)
            except Exception as error:
                self.ctx.log_exception(self, error)

        task = loop.create_task(send())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _answer_data(self, outcomes: Sequence[Outcome]) -> None:
        """The end of DATA or BDAT LAST: LMTP, exactly one reply per accepted RCPT, in order (RFC 2033
        §4.2), in one write; SMTP, the one shared reply. Then ``421 4.3.2`` and close when shutting down."""
        lines = [outcome.reply for outcome in outcomes] if self.lmtp else [outcomes[0].reply]
        if any(line.is_success for line in lines):
            # A delivered message starts the error and junk counts again (README, "Error limits").
            self._errors = self._junk = 0
        self._writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape"))
        await self._writer.drain()
        if self.ctx.shutting_down:
            await self.reply(replies.SHUTTING_DOWN)
            self._close()


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Drop a connection at once, unsent data included (uvloop's transports are not ``asyncio.Transport``
    subclasses, so the method is looked up rather than the type checked)."""
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
    elif transport is not None:
        transport.close()


def _clean_command(line: str) -> bool:
    """No NUL, no CR inside the line, valid UTF-8 (RFC 5321 §2.3.8, RFC 6531 §3.3): else ``500 5.5.2``."""
    if "\0" in line or "\r" in line:
        return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
