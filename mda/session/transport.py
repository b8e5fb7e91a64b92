"""The asyncio side of a session: socket bytes into the core, its actions out.

``Session`` is an ``asyncio.Protocol`` (so it runs on uvloop too) that only moves bytes and fulfils what
the sans-I/O core (``mda.session.core``) asks: replies are written, recipients resolved and messages
delivered off the event loop, STARTTLS started with ``loop.start_tls``. Reading is paused
(``pause_reading``) while a request is outstanding, so a pipelining client cannot make a session buffer
more than one read. It uses public asyncio API only.

Every way out of a session frees its connection slot once (``_release``); a client that stops reading
our replies (the transport paused writing) is cut off at the next timeout instead of being waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from mda import dsn, logs
from mda.delivery import Outcome, Transaction, contract_for, deliver, failure_outcomes
from mda.enums import TlsMode
from mda.replies import Reply
from mda.session import core
from mda.session.notify import success_report
from mda.spool import Spool
from mda.trace import TraceInfo, new_queue_id

if TYPE_CHECKING:
    from mda.config import Limits, ListenerConfig
    from mda.policy import Resolution
    from mda.server import ListenerContext, State

DRAIN_SECONDS = 2.0
DRAIN_BYTES = 1024 * 1024
"""Input read and dropped after a closing refusal (at most ``DRAIN_SECONDS``): a PROXY header, or a
pipelined burst of commands after the error limit's ``421``."""


class Session(asyncio.Protocol):
    """One client connection on an LMTP or SMTP listener."""

    def __init__(self, listener: ListenerContext) -> None:
        self.ctx = listener
        self.contract = contract_for(listener.config.protocol)
        """LMTP's per-recipient replies or SMTP's single one, chosen once for the session."""
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.core: core.SessionCore | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._write_blocked = False
        self._released = False
        self._admitted = False
        self._draining = -1
        """Bytes still read and dropped before closing (``Close(drain=True)``); -1 when not draining."""

    # --- the host the core asks --------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.ctx.state.config.hostname

    @property
    def limits(self) -> Limits:
        return self.ctx.limits

    @property
    def shutting_down(self) -> bool:
        return self.ctx.shutting_down

    def state(self) -> State:
        return self.ctx.state

    def listener(self) -> ListenerConfig:
        return self.ctx.current_listener()

    def starttls_offered(self, listener: ListenerConfig) -> bool:
        tls = listener.tls
        return tls is not None and tls.mode == TlsMode.STARTTLS and self.ctx.app.tls.available(tls)

    def tls_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        assert listener.tls is not None
        return self.ctx.app.tls.server_context(listener.tls)

    def open_spool(self) -> Spool:
        return Spool(self.ctx.spool_dir, budget=self.ctx.spool_budget)

    def admit(self, client: str) -> Reply | None:
        self.client_ip = client
        refusal = self.ctx.admit(self)
        self._admitted = refusal is None
        return refusal

    def proxy_refused(self) -> None:
        self.ctx.app.reporter.connection_refused(self.ctx.config, self.client_ip, "proxy_untrusted")

    def recipient_checked(self, sender: str, resolution: Resolution) -> None:
        self.ctx.recipient_checked(self, sender, resolution)

    def error_limit_reached(self, errors: int) -> None:
        self.ctx.error_limit_reached(self, errors)

    def log_exception(self, error: BaseException) -> None:
        self.ctx.log_exception(self, error)

    # --- what the application asks ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Inside DATA or delivering: graceful shutdown lets it finish and answer."""
        return self.core is not None and self.core.busy

    @property
    def in_transaction(self) -> bool:
        return self.core is not None and self.core.envelope is not None

    @property
    def tls_active(self) -> bool:
        return self.core is not None and self.core.tls_active

    def say_goodbye(self, reply: Reply) -> None:
        """Send ``reply`` and close without waiting for the client to read it: graceful shutdown must not
        stall on a client that stopped reading (that one is dropped at once)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.core is None:
            return
        if self._write_blocked:
            self._abort()
            return
        self._handle(self.core.goodbye(reply))

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else ""
        listener = self.ctx.config
        self.core = core.SessionCore(
            self,
            contract=self.contract,
            client_ip=self.client_ip,
            tls_active=transport.get_extra_info("ssl_object") is not None,
            proxy_protocol=bool(listener.proxy_protocol),
            proxy_trusted=listener.trusts_proxy(self.client_ip),
            error_limits=self.ctx.limits.error_limits(listener.protocol),
            now=self._loop.time(),
        )
        self._handle(self.core.take_events())

    def data_received(self, data: bytes) -> None:
        if self._draining >= 0:
            self._draining -= len(data)
            if self._draining < 0:
                self._close_now()
            return
        if self.core is not None:
            self._handle(self.core.receive(data, self._loop.time()))

    def eof_received(self) -> bool | None:
        """The client closed its side: close ours (a half-open session would hold its slot forever)."""
        self._close_now()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._timer, self._linger):
            if handle is not None:
                handle.cancel()
        self._timer = self._linger = None
        if self.core is not None:
            self.core.connection_lost()
        self._release()

    def pause_writing(self) -> None:
        """The client does not read its replies: stop reading its commands until it does (what it
        pipelines meanwhile stays in the kernel's buffers, not in ours)."""
        self._write_blocked = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless a request is outstanding or replies are backed up."""
        transport, session = self.transport, self.core
        if (
            transport is not None
            and session is not None
            and session.phase is not core.Phase.WAITING
            and not self._write_blocked
            and not transport.is_closing()
        ):
            transport.resume_reading()

    # --- actions ------------------------------------------------------------------------------------

    def _handle(self, events: list[core.Event]) -> None:
        """Carry out the core's events in order. Consecutive replies (a pipelined batch, LMTP's one per
        recipient) leave in one ``transport.write``: one send, one segment, for the whole batch.

        A recipient that can be resolved without a look-up that may block (``State.resolve_now``) is
        answered here and the core's next events are carried out in the same pass: no task, no pause
        of reading, and pipelined RCPTs still share one write."""
        pending: list[bytes] = []
        index = 0
        while index < len(events):
            event = events[index]
            index += 1
            if type(event) is core.Send:
                pending.append(event.data)
                continue
            if type(event) is core.Resolve:
                answered = self._resolve_now(event)
                if answered is not None:
                    events.extend(answered)
                    continue
            if pending:
                self._write(pending)
                pending = []
            if isinstance(event, core.Close):
                if event.drain:
                    self._drain_and_close()
                else:
                    self._close()
            else:
                self._request(event)
        if pending:
            self._write(pending)
        self._arm_timer()
        if self.ctx.shutting_down:  # graceful shutdown waits for busy sessions to finish (Application.drain)
            self.ctx.app.sessions_changed()

    def _write(self, chunks: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _request(self, event: core.Event) -> None:
        """Start what the core asked for; reading pauses until the answer is fed back."""
        if isinstance(event, core.StartTls):
            coroutine: Any = self._start_tls(event)
        elif isinstance(event, core.Resolve):
            coroutine = self._resolve(event)
        elif isinstance(event, core.Authenticate):
            coroutine = self._authenticate(event)
        elif isinstance(event, core.Deliver):
            coroutine = self._deliver(event)
        else:
            raise TypeError(event)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        self.ctx.in_background(coroutine)

    def _answered(self, events: list[core.Event]) -> None:
        self._handle(events)
        self._resume_reading()

    def _resolve_now(self, event: core.Resolve) -> list[core.Event] | None:
        """The core's events once ``event`` is resolved on the spot, or None when it needs the userdb's
        threads (then ``_resolve`` does it in the background)."""
        assert self.core is not None
        try:
            resolution = event.state.resolve_now(event.address, smtputf8=event.smtputf8, size=event.size)
        except Exception as error:
            return self.core.failed(error, self._loop.time())
        if resolution is None:
            return None
        return self.core.resolved(resolution, self._loop.time())

    async def _resolve(self, event: core.Resolve) -> None:
        assert self.core is not None
        try:
            resolution = await event.state.resolve_async(event.address, smtputf8=event.smtputf8, size=event.size)
        except Exception as error:
            self._answered(self.core.failed(error, self._loop.time()))
            return
        self._answered(self.core.resolved(resolution, self._loop.time()))

    async def _authenticate(self, event: core.Authenticate) -> None:
        """Wait out this address's penalty, then check the password in the AUTH threads (``mda.auth``).

        The wait comes first (Dovecot's ``auth_penalty``): a client that hangs up instead of waiting for
        ``535`` has gained nothing. Every failure is logged as ``auth_failed`` with the client address,
        the user as sent (escaped) and the mechanism, for fail2ban (README, "Protocol").
        """
        assert self.core is not None
        try:
            authenticator = self.ctx.app.authenticator
            credentials = authenticator.credentials(event.users_file)
            delay = authenticator.throttle.attempt(self.client_ip)
            if delay:
                await asyncio.sleep(delay)
            if self.transport is None or self.transport.is_closing():
                return
            ok = await self._loop.run_in_executor(
                authenticator.verifier, credentials.verify, event.user, event.password
            )
        except Exception as error:
            self._answered(self.core.failed(error, self._loop.time()))
            return
        if ok:
            authenticator.throttle.succeeded(self.client_ip)
        else:
            logs.event(
                "auth_failed",
                logging.WARNING,
                client=self.client_ip,
                user=event.user,
                mechanism=event.mechanism,
                listener=self.ctx.config.label,
            )
        self._answered(self.core.auth_checked(event.user if ok else None, self._loop.time()))

    async def _deliver(self, event: core.Deliver) -> None:
        """Deliver and report; every failure becomes outcomes, one per accepted recipient. A client that
        hangs up meanwhile does not stop the delivery (no half-done copies)."""
        assert self.core is not None
        envelope, spool = event.envelope, event.spool
        try:
            txn = self._transaction(event)
            try:
                outcomes: list[Outcome] | Any = await deliver(
                    envelope.context.config, txn, spool, event.result, self.contract, executor=self.ctx.executor
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.ctx.log_exception(self, error)
                outcomes = failure_outcomes(txn, error)
            self.ctx.delivered(self, txn, event.result, outcomes)
            self._notify_success(event, txn, outcomes)
        except Exception as error:
            spool.close()
            self._answered(self.core.failed(error, self._loop.time()))
            return
        spool.close()
        self._answered(self.core.delivered(outcomes, self._loop.time()))

    def _transaction(self, event: core.Deliver) -> Transaction:
        envelope = event.envelope
        queue_id = new_queue_id()
        return Transaction(
            queue_id=queue_id,
            sender=envelope.sender,
            recipients=envelope.recipients,
            trace=TraceInfo(
                sender=envelope.sender,
                helo=event.helo,
                client_ip=self.client_ip,
                hostname=self.hostname,
                protocol=event.protocol,
                queue_id=queue_id,
                timestamp=time.time(),
            ),
        )

    def _notify_success(self, event: core.Deliver, txn: Transaction, outcomes: list[Outcome]) -> None:
        envelope = event.envelope
        submission = envelope.context.config.submission
        if submission is None or not envelope.sender or not self.listener().success_dsn:
            return
        report = success_report(envelope, txn, event.spool, outcomes, hostname=self.hostname)
        if report is None:
            return

        async def send() -> None:
            try:
                await self._loop.run_in_executor(self.ctx.executor, dsn.submit, submission, envelope.sender, report)
            except Exception as error:
                self.ctx.log_exception(self, error)

        self.ctx.in_background(send())

    async def _start_tls(self, event: core.StartTls) -> None:
        """RFC 3207 with ``loop.start_tls``; a failed handshake ends the session (nothing more can be said
        in plaintext, §4.1)."""
        assert self.core is not None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            tls = await self._loop.start_tls(
                transport,
                self,
                event.context,
                server_side=True,
                ssl_handshake_timeout=self.ctx.limits.command_timeout,
            )
        except (ssl.SSLError, OSError, EOFError, ConnectionError, TimeoutError, RuntimeError) as error:
            self.ctx.log_exception(self, error)
            _abort(transport)
            self.connection_lost(None)
            return
        if tls is None or tls.is_closing():
            _abort(transport)
            self.connection_lost(None)
            return
        self.transport = tls
        self._answered(self.core.tls_started(self._loop.time()))

    # --- timers and closing -------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Keep one timer at or before the core's deadline. Every command moves the deadline later; the
        timer is not moved with it (a cancel and a new timer per reply) but re-armed when it fires early."""
        transport = self.transport
        if transport is None or transport.is_closing():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        deadline = self.core.deadline if self.core is not None else None
        if deadline is None:
            return  # a pending timer finds no deadline and stops
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._timed_out)
        self._timer_at = deadline

    def _timed_out(self) -> None:
        """Past the core's deadline. A client that stopped reading our replies cannot be told anything and
        a graceful close would wait for it forever: the connection is aborted, as Postfix and Dovecot do
        on a write timeout."""
        self._timer = None
        if self.core is None or self.core.deadline is None:
            return
        if self.core.deadline > self._loop.time():  # the deadline moved on since the timer was set
            self._arm_timer()
            return
        if self._write_blocked:
            self._abort()
            return
        self._handle(self.core.clock(self._loop.time()))

    def _close(self) -> None:
        """Close after what is buffered is sent; a client that does not read it within ``command_timeout``
        is cut off (``transport.close`` alone would wait for it forever)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            self._linger = self._loop.call_later(self.ctx.limits.command_timeout, _abort, transport)

    def _close_now(self) -> None:
        if self.core is not None and self.core.phase is not core.Phase.CLOSED:
            self.core.connection_lost()
        self._close()

    def _abort(self) -> None:
        _abort(self.transport)

    def _drain_and_close(self) -> None:
        """Send FIN and read what the peer already sent (up to ``DRAIN_BYTES``, ``DRAIN_SECONDS``) before
        closing: closing a socket with unread input makes the kernel send RST, which can destroy the
        refusal still on its way (a proxy sends its header at once)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._draining = DRAIN_BYTES
        self._linger = self._loop.call_later(DRAIN_SECONDS, self._close)

    def _release(self) -> None:
        """Free the session's connection slot, once, whichever way the session ends."""
        if not self._released:
            self._released = True
            self.ctx.session_closed(self)


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Drop a connection at once, unsent data included (uvloop's transports are not ``asyncio.Transport``
    subclasses, so the method is looked up rather than the type checked)."""
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
    elif transport is not None:
        with contextlib.suppress(Exception):
            transport.close()
