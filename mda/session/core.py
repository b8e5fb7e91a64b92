"""The LMTP/SMTP session as a sans-I/O state machine: bytes and the clock in, actions out.

In the style of h11: the core owns greeting, PROXY header, command syntax, pipelining, LHLO/EHLO
keywords, DATA and BDAT decoding, STARTTLS and AUTH states, error limits and timeouts, and never touches
a socket or an event loop. ``receive`` takes the bytes that arrived and returns what to do: ``Send``
replies, ``Close``, ``StartTls``, or one of the requests a transport fulfils off the event loop and feeds
back (``Resolve`` a recipient → ``resolved``, ``Authenticate`` → ``auth_checked``, ``Deliver`` →
``delivered``). While a request is outstanding the core reads nothing more, so the transport pauses the
socket and memory stays bounded; input already received stays buffered and is taken up afterwards, which
is pipelining (RFC 2920). ``deadline`` is the time the transport must call ``clock`` at.

The core translates, it never decides: a ``SessionHost`` answers what belongs to the listener (the
current configuration, admission, spools, reporting), and recipients go to the policy through
``Resolve``. Every reply text and enhanced code comes from ``mda.replies`` (README, "What each reply
means").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TYPE_CHECKING, Protocol

from mda import dsn, replies
from mda.addresses import Address, AddressError, parse_path
from mda.auth import decode_base64_text, decode_plain
from mda.dataread import DataResult
from mda.enums import BareNewline, TlsMode
from mda.enums import Protocol as ListenerProtocol
from mda.replies import Reply
from mda.session import proxy
from mda.session.data import ChunkDecoder, DotDecoder, MessageSink
from mda.tls import TlsUnavailable
from mda.trace import with_protocol
from mda.transaction import Recipient

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

    from mda.config import Limits, ListenerConfig
    from mda.contract import DeliveryContract
    from mda.policy import Resolution
    from mda.server import State
    from mda.spool import Spool
    from mda.transaction import Outcome

MAX_COMMAND_LINE = 2048
"""RFC 5321 §4.5.3.1.4 allows 512 octets plus what extensions add; accept 2048, refuse longer."""
MAX_UNKNOWN_COMMANDS = 20
"""Unknown or malformed commands tolerated before the connection is closed (``421 4.7.0``)."""
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "LHLO", "EHLO", "HELO"})
"""Commands that move no mail; past ``junk_command_limit`` each counts as an error (Postfix's list, which
also has ETRN; ``BDAT 0`` without LAST counts too)."""
IDENT = "mda"
MAX_BDAT_CHUNK = 2**40
"""A BDAT size with more digits than this is a syntax error rather than a reason to read forever."""

_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?$")


# --- what the core asks of the transport -------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Bytes to write to the client."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the connection after what was sent; ``drain``: first send FIN and read what the peer already
    sent (so the kernel does not answer it with RST, destroying the reply still on its way)."""

    drain: bool = False


@dataclass(frozen=True)
class StartTls:
    """Start TLS as the server with ``context``, then call ``tls_started`` (or end the connection)."""

    context: ssl.SSLContext


@dataclass(frozen=True)
class Resolve:
    """Resolve ``address`` with ``state``'s policy, then call ``resolved``."""

    state: State
    address: Address
    smtputf8: bool
    size: int | None


@dataclass(frozen=True)
class Authenticate:
    """Check ``user``/``password`` against ``users_file`` (after the client's penalty), then call
    ``auth_checked``."""

    users_file: Path
    mechanism: str
    user: str
    password: str


@dataclass(frozen=True)
class Deliver:
    """Deliver the spooled message of ``envelope``, then call ``delivered`` with one outcome per recipient
    (and close the spool: it is the transport's from here)."""

    envelope: Envelope
    spool: Spool
    result: DataResult
    helo: str
    protocol: str
    """The ``with`` name for ``Received`` (RFC 3848)."""


Event = Send | Close | StartTls | Resolve | Authenticate | Deliver


@dataclass
class Envelope:
    """One transaction's envelope, with the configuration snapshot taken at MAIL."""

    sender: str
    context: State
    size_hint: int | None = None
    smtputf8: bool = False
    recipients: list[Recipient] = field(default_factory=list)
    """Each accepted RCPT with its DSN parameters, in order."""
    ret: str | None = None
    envid: str | None = None
    chunks: ChunkDecoder | None = None
    """BDAT: the message being received in chunks (RFC 3030), closed on RSET, LAST or hang-up."""

    def drop_chunks(self) -> None:
        if self.chunks is not None:
            self.chunks.spool.close()
        self.chunks = None


class SessionHost(Protocol):
    """What the core needs from its listener: settings and snapshots, admission, spools, reporting."""

    @property
    def hostname(self) -> str: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def shutting_down(self) -> bool: ...
    def state(self) -> State:
        """The current configuration snapshot (taken once per transaction)."""
        ...

    def listener(self) -> ListenerConfig:
        """This listener's entry in the current configuration (a reload's new TLS files count)."""
        ...

    def starttls_offered(self, listener: ListenerConfig) -> bool: ...
    def tls_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        """The server context for STARTTLS; raises ``TlsUnavailable``."""
        ...

    def open_spool(self) -> Spool: ...
    def admit(self, client: str) -> Reply | None:
        """Admission of ``client`` (the connection's or the PROXY header's address); a refusal or None."""
        ...

    def proxy_refused(self) -> None: ...
    def recipient_checked(self, sender: str, resolution: Resolution) -> None: ...
    def error_limit_reached(self, errors: int) -> None: ...
    def log_exception(self, error: BaseException) -> None: ...


class Phase(Enum):
    PROXY = auto()
    COMMAND = auto()
    SKIP_LINE = auto()
    """Inside a command line that is too long: dropped up to its LF."""
    AUTH_PLAIN = auto()
    AUTH_USER = auto()
    AUTH_PASSWORD = auto()
    DATA = auto()
    BDAT = auto()
    BDAT_DISCARD = auto()
    WAITING = auto()
    """A request (resolve, authenticate, deliver, TLS) is outstanding."""
    CLOSED = auto()


class SessionCore:
    """One client connection's protocol state."""

    def __init__(
        self,
        host: SessionHost,
        *,
        contract: DeliveryContract,
        client_ip: str,
        tls_active: bool,
        proxy_protocol: bool,
        proxy_trusted: bool,
        error_limits: tuple[int, int],
        now: float,
    ) -> None:
        self.host = host
        self.contract = contract
        """What the replies after the data are: one per recipient (LMTP) or one for all (SMTP)."""
        self.lmtp = contract.protocol is ListenerProtocol.LMTP
        """The LMTP dialect: LHLO instead of EHLO/HELO, the greeting and the ``with`` word."""
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.helo: str | None = None
        self.extended = False
        self.authenticated: str | None = None
        self.envelope: Envelope | None = None
        self.busy = False
        """Inside DATA or a BDAT chunk, or delivering: graceful shutdown waits for the replies."""
        self.deadline: float | None = None
        self.phase = Phase.COMMAND
        self._buffer = b""
        self._pos = 0
        """Where the unread part of ``_buffer`` starts (commands are taken without copying the rest)."""
        self._events: list[Event] = []
        self._hard_errors, self._junk_limit = error_limits
        self._errors = 0
        """Error replies (4xx/5xx to a command) since the session began or last delivered a message."""
        self._junk = 0
        self._unknown_left = MAX_UNKNOWN_COMMANDS
        self._data: DotDecoder | None = None
        self._data_envelope: Envelope | None = None
        self._bdat_left = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._auth_initial = ""
        self._auth_user = ""
        self._pending_rcpt: dsn.RecipientDsn | None = None
        """The DSN parameters of the RCPT whose address is being resolved."""
        self._delivering = 0
        """Recipients of the message being delivered: the replies the client waits for."""
        self._proxy_protocol = proxy_protocol
        self._proxy_trusted = proxy_trusted
        self._started = False
        self._start(now)

    # --- input -------------------------------------------------------------------------------------

    def _start(self, now: float) -> None:
        self._set_timer(now, self.host.limits.command_timeout)
        if self._proxy_protocol:
            if not self._proxy_trusted:
                # Only a proxy_trusted peer may speak for its clients (README, "Protocol").
                self.host.proxy_refused()
                self._reply(replies.CLIENT_DENIED.with_text("PROXY header not accepted from this address"))
                self._close(drain=True)
                return
            self.phase = Phase.PROXY
            return
        self._admit()

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Bytes from the client; returns what to do."""
        if self.phase is Phase.CLOSED:
            return self.take_events()
        if len(self._buffer) > self._pos:
            self._buffer = self._rest() + data
        else:
            self._buffer, self._pos = data, 0
        self._run(now)
        return self.take_events()

    def clock(self, now: float) -> list[Event]:
        """The transport's timer fired: past the deadline the server says ``421 4.4.2`` and closes
        (RFC 5321 §4.5.3.2). The timer runs from the start of a command (or of DATA and each BDAT chunk),
        not from the last byte, so a client trickling one byte a second is timed out too."""
        if self.deadline is not None and now >= self.deadline and self.phase is not Phase.CLOSED:
            self._reply(replies.TIMEOUT, count=False)
            self._close()
        return self.take_events()

    def connection_lost(self) -> None:
        """The connection is gone: whatever the session holds is given back."""
        self.phase = Phase.CLOSED
        self.deadline = None
        self._drop_data()
        self._drop_transaction()

    # --- answers to requests ----------------------------------------------------------------------

    def resolved(self, resolution: Resolution, now: float) -> list[Event]:
        envelope, request = self.envelope, self._pending_rcpt
        self._pending_rcpt = None
        if self.phase is Phase.WAITING and envelope is not None and request is not None:
            self.host.recipient_checked(envelope.sender, resolution)
            if resolution.accepted:
                envelope.recipients.append(Recipient(resolution, request))
            self._reply(resolution.reply)
            self._resume(now)
        return self.take_events()

    def auth_checked(self, user: str | None, now: float) -> list[Event]:
        """The credentials checked: ``user`` when they were right."""
        if self.phase is Phase.WAITING:
            if user is not None:
                self.authenticated = user
                self._reply(replies.AUTH_OK)
            else:
                self._reply(replies.AUTH_FAILED)  # RFC 4954 §4: 535 5.7.8
            self._resume(now)
        return self.take_events()

    def delivered(self, outcomes: Sequence[Outcome], now: float) -> list[Event]:
        """The end of DATA or BDAT LAST: in LMTP exactly one reply per accepted RCPT, in order (RFC 2033
        §4.2); in SMTP the one shared reply. Then ``421 4.3.2`` and close when shutting down."""
        if self.phase is not Phase.WAITING:
            return self.take_events()
        self.busy = False
        self._delivering = 0
        self._answer(self.contract.replies([outcome.reply for outcome in outcomes]))
        if self.host.shutting_down:
            self._reply(replies.SHUTTING_DOWN)
            self._close()
            return self.take_events()
        self._resume(now)
        return self.take_events()

    def failed(self, error: BaseException, now: float) -> list[Event]:
        """A request raised: logged, the transaction dropped, ``451 4.3.0`` (never an exception text);
        after the data, in LMTP, once for every recipient."""
        if self.phase is Phase.WAITING:
            self.host.log_exception(error)
            self.busy = False
            self._drop_transaction()
            if self._delivering:
                self._answer(self.contract.replies([replies.LOCAL_ERROR] * self._delivering))
                self._delivering = 0
            else:
                self._reply(replies.LOCAL_ERROR)
            self._resume(now)
        return self.take_events()

    def tls_started(self, now: float) -> list[Event]:
        """The handshake is done: a new session on the TLS layer (RFC 3207 §4.2, the client says LHLO/EHLO
        again); nothing sent in plaintext after STARTTLS was kept (§5, command injection)."""
        if self.phase is Phase.WAITING:
            self.tls_active = True
            self._resume(now)
        return self.take_events()

    def goodbye(self, reply: Reply) -> list[Event]:
        """Graceful shutdown of an idle session: ``reply`` and close."""
        if self.phase is not Phase.CLOSED:
            self._reply(reply, count=False)
            self._close()
        return self.take_events()

    def _resume(self, now: float) -> None:
        self.phase = Phase.COMMAND
        self._set_timer(now, self.host.limits.command_timeout)
        self._run(now)

    # --- the loop ---------------------------------------------------------------------------------

    def _run(self, now: float) -> None:
        while True:
            phase = self.phase
            if phase is Phase.COMMAND or phase in (Phase.AUTH_PLAIN, Phase.AUTH_USER, Phase.AUTH_PASSWORD):
                if phase is Phase.COMMAND and self._hard_errors and self._errors >= self._hard_errors:
                    # Postfix smtpd_hard_error_limit: checked before the next command is read.
                    self.host.error_limit_reached(self._errors)
                    self._reply(replies.TOO_MANY_ERRORS)
                    # A pipelining client is still sending: closing on its unread commands would reset
                    # the connection and lose replies already written (the refusals and this 421).
                    self._close(drain=True)
                    return
                line = self._take_line()
                if line is None:
                    if self.phase is Phase.SKIP_LINE:
                        continue  # its end may be buffered already
                    return
                if phase is Phase.COMMAND:
                    self._command(line, now)
                else:
                    self._auth_line(line)
            elif phase is Phase.SKIP_LINE:
                end = self._buffer.find(b"\n", self._pos)
                if end < 0:
                    self._buffer, self._pos = b"", 0
                    return
                self._pos = end + 1
                self.phase = Phase.COMMAND
                self._refuse_command(replies.LINE_TOO_LONG)
            elif phase is Phase.DATA:
                if len(self._buffer) == self._pos or not self._feed_data(now):
                    return
            elif phase in (Phase.BDAT, Phase.BDAT_DISCARD):
                if not self._feed_chunk(now):
                    return
            elif phase is Phase.PROXY:
                if not self._proxy_header():
                    return
            else:  # WAITING, CLOSED
                return

    def _take_line(self) -> bytes | None:
        """One complete line (with its end), or None when more is needed; an overlong one is skipped
        (``500 5.5.2`` once its end arrives)."""
        buffer, pos = self._buffer, self._pos
        end = buffer.find(b"\n", pos, pos + MAX_COMMAND_LINE)
        if end < 0:
            if len(buffer) - pos >= MAX_COMMAND_LINE:
                self._pos = pos + MAX_COMMAND_LINE  # its end may be buffered already
                self.phase = Phase.SKIP_LINE
                self._auth_user = ""
            return None
        self._pos = end + 1
        return buffer[pos : end + 1]

    def _rest(self) -> bytes:
        """Everything buffered and not yet taken (given away: the buffer is empty after)."""
        data = self._buffer[self._pos :] if self._pos else self._buffer
        self._buffer, self._pos = b"", 0
        return data

    # --- commands ---------------------------------------------------------------------------------

    def _command(self, raw: bytes, now: float) -> None:
        text = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        if not _clean_command(text):
            self._refuse_command(replies.BAD_COMMAND_BYTES)
            return
        if self.host.shutting_down and not self.busy:
            self._reply(replies.SHUTTING_DOWN)
            self._close()
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb) if verb.isascii() and verb.isalpha() else None
        if handler is None:
            self._refuse_command(replies.UNKNOWN_COMMAND)
            return
        if verb in JUNK_COMMANDS:
            self._count_junk()
        self._set_timer(now, self.host.limits.command_timeout)
        try:
            handler(self, arg.strip(), now)
        except Exception as error:  # never "500 Error: (Exc) text" to the client (README)
            self.host.log_exception(error)
            self._drop_transaction()
            self._reply(replies.LOCAL_ERROR)

    def _refuse_command(self, reply: Reply) -> None:
        self._unknown_left -= 1
        if self._unknown_left <= 0:
            self._reply(replies.TOO_MANY_UNKNOWN)
            self._close(drain=True)
            return
        self._reply(reply)

    def _count_junk(self) -> None:
        """Postfix smtpd_junk_command_limit: past the limit, each command that moves no mail is an error."""
        self._junk += 1
        if self._junk_limit and self._junk > self._junk_limit:
            self._errors += 1

    def _extensions(self) -> list[str]:
        limits = self.host.limits
        listener = self.host.listener()
        keywords = [
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            f"SIZE {limits.max_message_size}",
            "SMTPUTF8",
            "CHUNKING",
        ]
        if not self.tls_active and self.host.starttls_offered(listener):
            keywords.append("STARTTLS")
        if listener.auth is not None and self.tls_active and self.authenticated is None:
            keywords.append("AUTH PLAIN LOGIN")
        if self.host.state().config.submission is not None and listener.success_dsn:
            keywords.append("DSN")
        return keywords

    def _greet(self, arg: str, *, extended: bool) -> None:
        if not arg or any(ord(c) < 33 for c in arg):
            self._reply(replies.PARAM_SYNTAX.with_text("Syntax: hostname required"))
            return
        self.helo = arg
        self.extended = extended
        self._drop_transaction()
        if extended:
            lines = [self.host.hostname, *self._extensions()]
            text = "".join(f"250{' ' if i == len(lines) - 1 else '-'}{line}\r\n" for i, line in enumerate(lines))
            self._send(text)
        else:
            self._reply(f"250 {self.host.hostname}")

    def cmd_lhlo(self, arg: str, now: float) -> None:
        if not self.lmtp:
            self._reply(replies.NOT_LMTP)
            return
        self._greet(arg, extended=True)

    def cmd_ehlo(self, arg: str, now: float) -> None:
        if self.lmtp:
            self._reply(replies.LHLO_ONLY)
            return
        self._greet(arg, extended=True)

    def cmd_helo(self, arg: str, now: float) -> None:
        if self.lmtp:
            self._reply(replies.LHLO_ONLY)
            return
        self._greet(arg, extended=False)

    def cmd_noop(self, arg: str, now: float) -> None:
        self._reply(replies.NOOP_OK)

    def cmd_rset(self, arg: str, now: float) -> None:
        if arg:
            self._reply(replies.PARAM_SYNTAX)
            return
        self._drop_transaction()
        self._reply(replies.RESET_OK)

    def cmd_quit(self, arg: str, now: float) -> None:
        self._reply(replies.BYE)
        self._close()

    def cmd_vrfy(self, arg: str, now: float) -> None:
        self._reply(replies.VRFY_CANNOT if arg else replies.PARAM_SYNTAX)

    def cmd_expn(self, arg: str, now: float) -> None:
        self._reply(replies.EXPN_REFUSED)

    def cmd_help(self, arg: str, now: float) -> None:
        self._reply(replies.HELP)

    def _gate(self) -> Reply | None:
        """``530 5.7.0`` before STARTTLS (``require_tls``, RFC 3207 §4) or before AUTH (RFC 4954 §6)."""
        listener = self.host.listener()
        if listener.require_tls and not self.tls_active:
            return replies.TLS_REQUIRED
        if listener.auth is not None and listener.auth.required and self.authenticated is None:
            return replies.AUTH_REQUIRED
        return None

    def cmd_mail(self, arg: str, now: float) -> None:
        if self.helo is None:
            self._reply(replies.NEED_HELO)
            return
        if self.envelope is not None:
            self._reply(replies.NESTED_MAIL)
            return
        gate = self._gate()
        if gate is not None:
            self._reply(gate)
            return
        if arg[:5].upper() != "FROM:":
            self._reply(replies.SYNTAX_ERROR.with_text("Syntax: MAIL FROM:<address>"))
            return
        try:
            address, param_text = parse_path(arg[5:])
        except AddressError:
            self._reply(replies.BAD_SENDER_SYNTAX)
            return
        params = _params(param_text)
        if params is None:
            self._reply(replies.PARAM_SYNTAX)
            return
        refusal = self._check_mail_params(params)
        if refusal is not None:
            self._reply(refusal)
            return
        smtputf8 = "SMTPUTF8" in params
        if address is not None and not address.is_ascii and not smtputf8:
            self._reply(replies.NEEDS_SMTPUTF8)
            return
        self.envelope = Envelope(
            sender=str(address) if address else "",
            context=self.host.state(),
            size_hint=int(params["SIZE"]) if params.get("SIZE") else None,
            smtputf8=smtputf8,
            ret=dsn.check_ret(params["RET"]) if "RET" in params else None,
            envid=dsn.check_envid(params["ENVID"]) if "ENVID" in params else None,
        )
        self._reply(replies.SENDER_OK)

    def _check_mail_params(self, params: dict[str, str]) -> Reply | None:
        for name, value in params.items():
            if name == "SIZE":
                if not value.isdigit():
                    return replies.PARAM_SYNTAX
                if int(value) > self.host.limits.max_message_size:
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

    def cmd_rcpt(self, arg: str, now: float) -> None:
        envelope = self.envelope
        if envelope is None:
            self._reply(replies.NEED_MAIL)
            return
        if arg[:3].upper() != "TO:":
            self._reply(replies.SYNTAX_ERROR.with_text("Syntax: RCPT TO:<address>"))
            return
        # The domain ``RCPT TO:<Postmaster>`` means (RFC 5321 §4.5.1): the first one configured.
        postmaster_domain = next(iter(envelope.context.config.domains))
        try:
            address, param_text = parse_path(arg[3:], postmaster_domain=postmaster_domain)
        except AddressError:
            self._reply(replies.BAD_ADDRESS_SYNTAX)
            return
        if address is None:
            self._reply(replies.BAD_ADDRESS_SYNTAX)
            return
        params = _params(param_text)
        if params is None:
            self._reply(replies.PARAM_SYNTAX)
            return
        if any(name not in ("NOTIFY", "ORCPT") for name in params):
            self._reply(replies.PARAM_UNKNOWN)
            return
        try:
            request = dsn.RecipientDsn.parse(params)
        except dsn.DsnSyntaxError as error:
            self._reply(replies.PARAM_SYNTAX.with_text(f"Bad DSN parameter: {error}"))
            return
        if envelope.chunks is not None:
            self._reply(replies.IN_TRANSACTION.with_text("RCPT not allowed after BDAT"))
            return
        if len(envelope.recipients) >= self.host.limits.max_recipients:
            self._reply(replies.TOO_MANY_RECIPIENTS)
            return
        self._pending_rcpt = request
        self._wait(Resolve(envelope.context, address, envelope.smtputf8, envelope.size_hint), keep_timer=True)

    # --- STARTTLS (RFC 3207) and AUTH (RFC 4954) ----------------------------------------------------

    def cmd_starttls(self, arg: str, now: float) -> None:
        listener = self.host.listener()
        if arg:
            self._reply(replies.PARAM_SYNTAX)
            return
        if self.tls_active:
            self._reply(replies.TLS_ALREADY)
            return
        if listener.tls is None or listener.tls.mode != TlsMode.STARTTLS:
            self._reply(replies.UNKNOWN_COMMAND)
            return
        if self.envelope is not None:
            self._reply(replies.IN_TRANSACTION)
            return
        try:
            context = self.host.tls_context(listener)
        except TlsUnavailable as error:
            self.host.log_exception(error)
            self._reply(replies.TLS_UNAVAILABLE)
            return
        self._reply(replies.TLS_READY)
        self.helo = None
        self.extended = False
        self.authenticated = None
        self._drop_transaction()
        self._buffer, self._pos = b"", 0  # RFC 3207 §5: nothing pipelined in plaintext survives the switch
        self._wait(StartTls(context), keep_timer=True)

    def cmd_auth(self, arg: str, now: float) -> None:
        """AUTH PLAIN (RFC 4616) and LOGIN, over TLS only (RFC 4954 §4: no plaintext passwords)."""
        listener = self.host.listener()
        if listener.auth is None or listener.auth.users_file is None:
            self._reply(replies.AUTH_NOT_AVAILABLE)
            return
        if self.helo is None:
            self._reply(replies.NEED_HELO)
            return
        if self.authenticated is not None:
            self._reply(replies.AUTH_ALREADY)
            return
        if self.envelope is not None:
            self._reply(replies.IN_TRANSACTION)
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self._reply(replies.AUTH_MECHANISM)
            return
        if not self.tls_active:
            self._reply(replies.AUTH_NEEDS_TLS)
            return
        initial = initial.strip()
        if mechanism == "PLAIN":
            if initial and initial != "=":
                self._auth_plain(initial)
            else:
                self._challenge("", Phase.AUTH_PLAIN)
        elif initial:
            self._auth_login_user(initial)
        else:
            self._challenge("VXNlcm5hbWU6", Phase.AUTH_USER)  # "Username:"

    def _challenge(self, text: str, phase: Phase) -> None:
        self._send(f"334 {text}\r\n")
        self.phase = phase

    def _auth_line(self, raw: bytes) -> None:
        phase = self.phase
        self.phase = Phase.COMMAND
        if len(raw) > MAX_COMMAND_LINE:
            self._reply(replies.LINE_TOO_LONG)
            return
        answer = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape").strip()
        if answer == "*":
            self._reply(replies.AUTH_CANCELLED)
            return
        if phase is Phase.AUTH_PLAIN:
            self._auth_plain(answer)
        elif phase is Phase.AUTH_USER:
            self._auth_login_user(answer)
        else:
            password = decode_base64_text(answer)
            user = self._auth_user
            self._auth_user = ""
            self._check_credentials("LOGIN", user, password)

    def _auth_plain(self, response: str) -> None:
        pair = decode_plain(response)
        if pair is None:
            self._reply(replies.AUTH_BAD_BASE64)
            return
        self._check_credentials("PLAIN", *pair)

    def _auth_login_user(self, text: str) -> None:
        user = decode_base64_text(text)
        if not user:
            self._reply(replies.AUTH_BAD_BASE64)
            return
        self._auth_user = user
        self._challenge("UGFzc3dvcmQ6", Phase.AUTH_PASSWORD)  # "Password:"

    def _check_credentials(self, mechanism: str, user: str, password: str | None) -> None:
        if not user or password is None:
            self._reply(replies.AUTH_BAD_BASE64)
            return
        auth = self.host.listener().auth
        if auth is None or auth.users_file is None:  # removed by a reload meanwhile
            self._reply(replies.AUTH_NOT_AVAILABLE)
            return
        self._wait(Authenticate(auth.users_file, mechanism, user, password), keep_timer=False)

    # --- DATA and BDAT ------------------------------------------------------------------------------

    def _sink(self, envelope: Envelope) -> MessageSink:
        limits = self.host.limits
        return MessageSink(
            self.host.open_spool(),
            max_size=limits.max_message_size,
            normalize_bare=envelope.context.config.bare_newline == BareNewline.NORMALIZE,
            max_header_size=limits.max_header_size,
        )

    def cmd_data(self, arg: str, now: float) -> None:
        envelope = self.envelope
        if arg:
            self._reply(replies.PARAM_SYNTAX)
            return
        if envelope is None:
            self._reply(replies.NEED_MAIL)
            return
        if envelope.chunks is not None:
            self._reply(replies.DATA_AFTER_BDAT)
            return
        if not envelope.recipients:
            self._reply(replies.NEED_RCPT)
            return
        self._reply(replies.START_DATA)
        self.busy = True
        self.envelope = None
        self._data_envelope = envelope
        self._data = DotDecoder(self._sink(envelope))
        self.phase = Phase.DATA
        self._set_timer(now, self.host.limits.data_timeout)

    def _feed_data(self, now: float) -> bool:
        """Give the buffer to the DATA decoder; True when the data ended (the rest stays buffered)."""
        decoder, data = self._data, self._rest()
        assert decoder is not None
        used = decoder.feed(data)
        if used is None:
            return False
        self._buffer = data[used:]
        envelope = self._data_envelope
        assert envelope is not None
        self._data = self._data_envelope = None
        self._finish_message(envelope, decoder.sink, decoder.finish())
        return True

    def cmd_bdat(self, arg: str, now: float) -> None:
        """RFC 3030 CHUNKING: ``BDAT <size> [LAST]``, the octets follow the command line at once.

        Every chunk is read, even one that is refused (no MAIL, no recipient), so the session stays in
        step with a pipelining client (RFC 3030 §3). The chunks are decoded like DATA without stuffing
        into one spool; ``LAST`` delivers and answers like the end of DATA.
        """
        words = arg.split()
        if (
            not 1 <= len(words) <= 2
            or not words[0].isdigit()
            or len(words[0]) > len(str(MAX_BDAT_CHUNK))
            or [word.upper() for word in words[1:]] not in ([], ["LAST"])
        ):
            self._reply(replies.PARAM_SYNTAX.with_text("Syntax: BDAT <size> [LAST]"))
            return
        size, last = int(words[0]), len(words) == 2
        if size == 0 and not last:
            self._count_junk()
        envelope = self.envelope
        self._bdat_left, self._bdat_size, self._bdat_last = size, size, last
        self._set_timer(now, self.host.limits.data_timeout)
        if envelope is None or not envelope.recipients:
            self._bdat_refusal = replies.NEED_MAIL if envelope is None else replies.NEED_RCPT
            self.phase = Phase.BDAT_DISCARD
            return
        if envelope.chunks is None:
            envelope.chunks = ChunkDecoder(self._sink(envelope))
        self.busy = True
        self.phase = Phase.BDAT

    def _feed_chunk(self, now: float) -> bool:
        """Take this chunk's octets from the buffer; True when the chunk is complete."""
        left = self._bdat_left
        if left:
            data = self._rest()
            if not data:
                return False
            piece = data if len(data) <= left else data[:left]
            if len(piece) < len(data):
                self._buffer = data[len(piece) :]
            left = self._bdat_left = left - len(piece)
            if self.phase is Phase.BDAT:
                assert self.envelope is not None and self.envelope.chunks is not None
                self.envelope.chunks.feed(piece)
            if left:
                return False
        self._set_timer(now, self.host.limits.command_timeout)
        if self.phase is Phase.BDAT_DISCARD:
            self.phase = Phase.COMMAND
            assert self._bdat_refusal is not None
            self._reply(self._bdat_refusal)
            return True
        envelope = self.envelope
        assert envelope is not None and envelope.chunks is not None
        if not self._bdat_last:
            self.phase = Phase.COMMAND
            self.busy = False
            self._reply(replies.CHUNK_OK.with_text(f"{self._bdat_size} octets received"))
            return True
        self.envelope = None
        chunks = envelope.chunks
        envelope.chunks = None
        self._finish_message(envelope, chunks.sink, chunks.finish())
        return True

    def _finish_message(self, envelope: Envelope, sink: MessageSink, result: DataResult) -> None:
        if sink.failed is not None:
            self.host.log_exception(sink.failed)
            sink.spool.close()
            self.busy = False
            self.phase = Phase.COMMAND
            self._answer(self.contract.replies([replies.LOCAL_ERROR] * len(envelope.recipients)))
            return
        self.busy = True
        self._delivering = len(envelope.recipients)
        self.phase = Phase.WAITING
        self.deadline = None  # the timer stops while the copies are written
        protocol = with_protocol(
            lmtp=self.lmtp,
            extended=self.extended,
            tls=self.tls_active,
            auth=self.authenticated is not None,
            utf8=envelope.smtputf8,
        )
        self._events.append(Deliver(envelope, sink.spool, result, self.helo or "", protocol))

    def _answer(self, lines: Sequence[Reply]) -> None:
        """The replies after the data, in one write (the contract chose how many)."""
        if any(line.is_success for line in lines):
            # A delivered message starts the error and junk counts again (README, "Error limits").
            self._errors = self._junk = 0
        self._send("".join(f"{line}\r\n" for line in lines))

    # --- PROXY --------------------------------------------------------------------------------------

    def _proxy_header(self) -> bool:
        """PROXY v1 or v2 from a trusted peer, required before the greeting; without a valid one the
        connection is closed without a word (the peer is a load balancer, not a mail client). The source
        address it carries becomes the client; without one the connection's own address stays."""
        try:
            header = proxy.parse(self._buffer[self._pos :])
        except proxy.ProxyError as error:
            self.host.log_exception(ValueError(f"invalid PROXY header: {error}"))
            self._close()
            return False
        if header is None:
            return False
        self._pos += header.length
        if header.client is not None:
            self.client_ip = header.client
        self.phase = Phase.COMMAND
        self._admit()
        return True

    def _admit(self) -> None:
        refusal = self.host.admit(self.client_ip)
        if refusal is not None:
            self._reply(refusal)
            self._close()
            return
        self._reply(f"220 {self.host.hostname} {'LMTP' if self.lmtp else 'ESMTP'} {IDENT} ready")

    # --- helpers ------------------------------------------------------------------------------------

    def _wait(self, event: Event, *, keep_timer: bool) -> None:
        self.phase = Phase.WAITING
        if not keep_timer:
            self.deadline = None
        self._events.append(event)

    def _set_timer(self, now: float, seconds: float) -> None:
        self.deadline = now + seconds

    def _send(self, text: str) -> None:
        self._events.append(Send(text.encode("utf-8", "surrogateescape")))

    def _reply(self, reply: Reply | str, *, count: bool = True) -> None:
        """One reply line; a 4xx or 5xx counts as an error of the session (``hard_error_limit``)."""
        text = str(reply)
        if count and text[:1] in ("4", "5"):
            self._errors += 1
        self._send(text + "\r\n")

    def _close(self, *, drain: bool = False) -> None:
        self._drop_data()
        self._drop_transaction()
        self.phase = Phase.CLOSED
        self.deadline = None
        self._buffer, self._pos = b"", 0
        self._events.append(Close(drain=drain))

    def _drop_data(self) -> None:
        if self._data is not None:
            self._data.sink.spool.close()
            self._data = self._data_envelope = None
        self.busy = False

    def _drop_transaction(self) -> None:
        if self.envelope is not None:
            self.envelope.drop_chunks()
        self.envelope = None


_COMMANDS = {
    name[4:].upper(): method
    for name, method in vars(SessionCore).items()
    if name.startswith("cmd_") and callable(method)
}


def _params(text: str) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for item in text.split():
        match = _PARAM.match(item)
        if not match or match.group(1).upper() in params:
            return None  # RFC 5321 §4.1.2 grammar; a parameter given twice is ambiguous
        params[match.group(1).upper()] = match.group(2) or ""
    return params


def _clean_command(line: str) -> bool:
    """No NUL, no CR inside the line, valid UTF-8 (RFC 5321 §2.3.8, RFC 6531 §3.3): else ``500 5.5.2``."""
    if "\0" in line or "\r" in line:
        return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
