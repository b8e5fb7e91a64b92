"""The asyncio transport in-process, on asyncio's own loop and on uvloop, through real sockets.

The server side is the real ``Session`` with a real ``ListenerContext``, policy and mbox delivery; the
client is a plain asyncio stream. An mbox dot-lock held by the test keeps a delivery waiting, which shows
that the session stops reading the socket while its delivery is pending and starts again after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mda.auth import Authenticator
from mda.config import load
from mda.server import ListenerContext, Reporter, State
from mda.session.transport import Session
from mda.spool import MemoryBudget
from mda.tls import TlsContexts
from tests.inprocess import mbox_lmtp_config, reply_lines


class App:
    """The application side a listener needs (``server.ListenerHost``)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.executor = ThreadPoolExecutor(max_workers=4)
        self.spool_dir: Path | None = None
        self.spool_budget = MemoryBudget(64 * 1024 * 1024)
        self.reporter = Reporter()
        self.authenticator = Authenticator()
        self.tls = TlsContexts()
        self.shutting_down = False
        self.contexts: list[ListenerContext] = []

    def open_sessions(self) -> int:
        return sum(len(context.sessions) for context in self.contexts)

    def sessions_changed(self) -> None:
        pass


def run(loop_kind: str, main: Callable[[], Awaitable[None]]) -> None:
    if loop_kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


async def serve(tmp_path: Path, **settings: Any) -> tuple[App, ListenerContext, asyncio.Server]:
    config = load(mbox_lmtp_config(tmp_path, **settings))
    app = App(State.build(config))
    context = ListenerContext(config.listeners[0], app)
    app.contexts.append(context)
    server = await asyncio.get_running_loop().create_server(lambda: Session(context), "127.0.0.1", 0)
    return app, context, server


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_reading_pauses_while_a_delivery_is_pending(tmp_path, loop_kind):
    async def main() -> None:
        app, context, server = await serve(tmp_path)
        port = server.sockets[0].getsockname()[1]
        lock = tmp_path / "alice.mbox.lock"
        lock.write_text("held by the test\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reply_lines(reader, 1))[0].startswith("220 ")
        writer.write(
            b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\n"
        )
        assert [line[:3] for line in await reply_lines(reader, 4)] == ["250", "250", "250", "354"]
        (session,) = context.sessions
        assert session.transport is not None
        # The delivery waits for the lock: the socket is not read meanwhile (the MAIL behind it waits).
        await _until(lambda: session.transport is not None and not session.transport.is_reading())
        assert session.busy
        lock.unlink()
        delivered, sender = await reply_lines(reader, 2)
        assert (delivered[:9], sender) == ("250 2.0.0", "250 2.1.0 Sender OK")
        await _until(lambda: session.transport is not None and session.transport.is_reading())
        writer.write(b"QUIT\r\n")
        assert (await reply_lines(reader, 1))[0] == "221 2.0.0 Bye"
        assert b"Subject: one\n\nbody\n" in (tmp_path / "alice.mbox").read_bytes()
        writer.close()
        await _until(lambda: not context.sessions)
        server.close()
        app.executor.shutdown()

    run(loop_kind, main)


async def _until(condition: Callable[[], bool], seconds: float = 20) -> None:
    """Wait for ``condition``, looking after every turn of the loop."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_many_pipelined_recipients_are_answered_in_order(tmp_path, loop_kind):
    """Recipients the policy answers without a user database are resolved as they are read, each answer
    letting the core go on to the next pipelined command: 900 RCPTs in one write get 900 replies, in
    order, then one reply per accepted RCPT and one copy per mailbox."""
    recipients = ["alice@example.test", "nobody@example.test", "bob@example.test"] * 300

    async def main() -> None:
        app, context, server = await serve(tmp_path, limits={"max_recipients": 1000})
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reply_lines(reader, 1))[0].startswith("220 ")
        commands = b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\n"
        commands += b"".join(f"RCPT TO:<{address}>\r\n".encode() for address in recipients)
        writer.write(commands + b"DATA\r\n")
        replies = [line[:3] for line in await reply_lines(reader, 2 + len(recipients) + 1)]
        expected = ["550" if address.startswith("nobody") else "250" for address in recipients]
        assert replies == ["250", "250", *expected, "354"]
        writer.write(b"Subject: many\r\n\r\nbody\r\n.\r\n")
        delivered = await reply_lines(reader, 600)
        assert all(line.startswith("250 2.0.0") for line in delivered)
        writer.write(b"QUIT\r\n")
        assert (await reply_lines(reader, 1))[0] == "221 2.0.0 Bye"
        writer.close()
        await _until(lambda: not context.sessions)
        server.close()
        app.executor.shutdown()

    run(loop_kind, main)
    for user in ("alice", "bob"):
        assert (tmp_path / f"{user}.mbox").read_bytes().count(b"Subject: many\n") == 1


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_recipient_check_that_raises_on_the_spot_is_a_temporary_failure(tmp_path, loop_kind, monkeypatch):
    """A fault while a recipient is answered as it is read (here the policy raising, as a broken
    filesystem would) gets ``451 4.3.0`` for that RCPT, never a 5xx, and the session goes on."""
    real = State.resolve_now
    calls: list[str] = []

    def first_fails(self: State, address: Any, **kwargs: Any) -> Any:
        calls.append(str(address))
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return real(self, address, **kwargs)

    monkeypatch.setattr(State, "resolve_now", first_fails)

    async def main() -> None:
        app, context, server = await serve(tmp_path)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reply_lines(reader, 1))[0].startswith("220 ")
        writer.write(b"LHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert [line[:9] for line in await reply_lines(reader, 3)] == ["250 CHUNK", "250 2.1.0", "451 4.3.0"]
        # As for any request that raised, the transaction was dropped; the session serves the next one.
        writer.write(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test>\r\nQUIT\r\n")
        assert [line[:9] for line in await reply_lines(reader, 3)] == ["250 2.1.0", "250 2.1.5", "221 2.0.0"]
        writer.close()
        await _until(lambda: not context.sessions)
        server.close()
        app.executor.shutdown()

    run(loop_kind, main)
    assert len(calls) == 2
