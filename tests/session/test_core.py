"""The sans-I/O session core driven in-process with bytes: no socket, no event loop.

A small driver plays the transport: it feeds bytes, writes ``Send`` to a buffer, answers ``Resolve`` with
the real policy of a real configuration, ``Deliver`` by keeping the spooled bytes and answering ``250``
per recipient, and ``Authenticate`` by comparing with one known password.
"""

from __future__ import annotations

import base64
import itertools
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mda import replies
from mda.config import Limits, ListenerConfig, load
from mda.delivery import Outcome, contract_for
from mda.policy import Resolution
from mda.replies import Reply
from mda.server import State
from mda.session import core
from mda.spool import Spool
from tests.conftest import basic_config


class Host:
    """What a listener gives the core, from a real configuration."""

    def __init__(self, state: State, listener: ListenerConfig) -> None:
        self._state = state
        self._listener = listener
        self.hostname = state.config.hostname
        self.limits: Limits = listener.limits
        self.shutting_down = False
        self.admitted: list[str] = []
        self.refused_proxies = 0
        self.errors: list[BaseException] = []
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def state(self) -> State:
        return self._state

    def listener(self) -> ListenerConfig:
        return self._listener

    def starttls_offered(self, listener: ListenerConfig) -> bool:
        return listener.tls is not None

    def tls_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        return self.tls

    def open_spool(self) -> Spool:
        return Spool()

    def admit(self, client: str) -> Reply | None:
        self.admitted.append(client)
        return None

    def proxy_refused(self) -> None:
        self.refused_proxies += 1

    def recipient_checked(self, sender: str, resolution: Resolution) -> None:
        pass

    def error_limit_reached(self, errors: int) -> None:
        pass

    def log_exception(self, error: BaseException) -> None:
        self.errors.append(error)


class Driver:
    """The transport's part, synchronously."""

    def __init__(self, tmp_path: Path, protocol: str = "lmtp", *, tls_active: bool = False, **listener: Any) -> None:
        document = basic_config(tmp_path, listeners=[{"protocol": protocol, "bind": "127.0.0.1:0", **listener}])
        path = tmp_path / "mda.yaml"
        path.write_text(yaml.safe_dump(document))
        config = load(path)
        self.host = Host(State.build(config), config.listeners[0])
        self.now = 1000.0
        self.core = core.SessionCore(
            self.host,
            contract=contract_for(protocol),
            client_ip="192.0.2.7",
            tls_active=tls_active,
            proxy_protocol=bool(listener.get("proxy_protocol")),
            proxy_trusted="proxy_trusted" in listener,
            error_limits=self.host.limits.error_limits(protocol),
            now=self.now,
        )
        self.out = b""
        self.closed: core.Close | None = None
        self.stored: list[bytes] = []
        self.requests: list[core.Event] = []
        self.tls_started = 0
        self.delivery_error: Exception | None = None
        """When set, a delivery raises it (the transport then calls ``failed``)."""
        self.run(self.core.take_events())

    def feed(self, data: bytes) -> bytes:
        before = len(self.out)
        self.run(self.core.receive(data, self.now))
        return self.out[before:]

    def run(self, events: list[core.Event]) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            self.requests.append(event)
            if isinstance(event, core.Send):
                self.out += event.data
            elif isinstance(event, core.Close):
                self.closed = event
            elif isinstance(event, core.Resolve):
                resolution = event.state.resolve(event.address, smtputf8=event.smtputf8, size=event.size)
                queue += self.core.resolved(resolution, self.now)
            elif isinstance(event, core.Deliver):
                self.stored.append(event.spool.read_all())
                event.spool.close()
                if self.delivery_error is not None:
                    queue += self.core.failed(self.delivery_error, self.now)
                    continue
                outcomes = [Outcome(r, replies.DELIVERED) for r in event.envelope.recipients]
                queue += self.core.delivered(outcomes, self.now)
            elif isinstance(event, core.Authenticate):
                ok = (event.user, event.password) == ("alice", "secret")
                queue += self.core.auth_checked(event.user if ok else None, self.now)
            elif isinstance(event, core.StartTls):
                self.tls_started += 1

    def lines(self) -> list[str]:
        return self.out.decode().splitlines()


def codes(output: bytes) -> list[str]:
    return [line[:3] + (line[3:4] if line[3:4] == "-" else "") for line in output.decode().splitlines()]


TRANSACTION = (
    b"LHLO client.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
    b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
)


def test_greeting_and_lhlo_keywords(tmp_path):
    driver = Driver(tmp_path)
    assert driver.out == b"220 mx.example.test LMTP mda ready\r\n"
    reply = driver.feed(b"LHLO client.test\r\n").decode()
    assert reply.splitlines() == [
        "250-mx.example.test",
        "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        f"250-SIZE {driver.host.limits.max_message_size}",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]


def test_pipelined_transaction_in_one_piece_answers_each_recipient(tmp_path):
    driver = Driver(tmp_path)
    out = driver.feed(TRANSACTION + b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n").decode()
    lines = out.splitlines()[7:]
    assert lines[:4] == [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "550 5.1.1 No such user here",
        "250 2.1.5 Recipient OK",
    ]
    assert lines[4].startswith("354 ")
    assert lines[5:] == ["250 2.0.0 Delivered", "250 2.0.0 Delivered", "221 2.0.0 Bye"]
    assert driver.stored == [b"Subject: x\n\n.dot\n"]
    assert driver.closed == core.Close()


def test_smtp_answers_once_and_refuses_lhlo(tmp_path):
    driver = Driver(tmp_path, "smtp")
    assert driver.feed(b"LHLO x\r\n") == b"500 5.5.1 This is an SMTP server: use EHLO or HELO\r\n"
    out = driver.feed(
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n"
    )
    assert out.decode().splitlines()[-1] == "250 2.0.0 Delivered"
    assert out.count(b"Delivered") == 1


@pytest.mark.parametrize(("protocol", "hello", "expected"), [("lmtp", b"LHLO", 2), ("smtp", b"EHLO", 1)])
def test_a_delivery_that_raises_is_answered_as_the_protocol_promises(tmp_path, protocol, hello, expected):
    """LMTP owes one reply per accepted RCPT even when the delivery request itself fails (RFC 2033
    §4.2), else the client reads the next command's reply as a recipient's; SMTP owes one."""
    driver = Driver(tmp_path, protocol)
    driver.delivery_error = RuntimeError("reporting failed")
    out = driver.feed(
        hello + b" c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
        b"DATA\r\nx\r\n.\r\nNOOP\r\n"
    )
    lines = out.decode().splitlines()
    assert lines[-1 - expected :] == ["451 4.3.0 Local error in processing"] * expected + ["250 2.0.0 OK"]
    assert driver.host.errors and str(driver.host.errors[-1]) == "reporting failed"


def test_bdat_chunks_and_last(tmp_path):
    driver = Driver(tmp_path)
    driver.feed(TRANSACTION.replace(b"DATA\r\n", b""))
    out = driver.feed(b"BDAT 5\r\na\r\nb\rBDAT 3 LAST\r\n\nc\r")
    assert out.decode().splitlines() == ["250 2.0.0 5 octets received", "250 2.0.0 Delivered", "250 2.0.0 Delivered"]
    assert driver.stored == [b"a\nb\nc\r"]


def test_bdat_without_transaction_is_read_and_refused(tmp_path):
    driver = Driver(tmp_path)
    driver.feed(b"LHLO c\r\n")
    assert driver.feed(b"BDAT 10\r\nNOOP\r\nNOOPNOOP\r\n") == b"503 5.5.1 Need MAIL command first\r\n250 2.0.0 OK\r\n"


def test_long_lines_and_bad_bytes(tmp_path):
    driver = Driver(tmp_path)
    assert driver.feed(b"NOOP " + b"x" * 5000) == b""  # not answered before its end arrives
    assert driver.feed(b"x" * 5000 + b"\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    assert driver.feed(b"NOOP " + b"y" * 5000 + b"\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    assert driver.feed(b"NO\x00OP\r\n") == b"500 5.5.2 Invalid characters in command\r\n"
    assert driver.feed(b"\xff\xfe\r\n") == b"500 5.5.2 Invalid characters in command\r\n"


def test_timeout_after_the_deadline_only(tmp_path):
    driver = Driver(tmp_path)
    deadline = driver.core.deadline
    assert deadline == driver.now + driver.host.limits.command_timeout
    assert driver.core.clock(deadline - 1) == []
    events = driver.core.clock(deadline)
    assert events == [core.Send(b"421 4.4.2 Timeout, closing connection\r\n"), core.Close()]


def test_data_uses_the_data_timeout_and_delivery_stops_the_timer(tmp_path):
    driver = Driver(tmp_path)
    driver.feed(TRANSACTION)
    assert driver.core.deadline == driver.now + driver.host.limits.data_timeout
    events = driver.core.receive(b"x\r\n.\r\n", driver.now)
    assert isinstance(events[-1], core.Deliver) and driver.core.deadline is None
    assert driver.core.clock(driver.now + 10**6) == []


def test_input_waits_while_a_request_is_outstanding(tmp_path):
    """Pipelined commands behind a RCPT are not looked at until its resolution is fed back."""
    driver = Driver(tmp_path)
    driver.feed(b"LHLO c\r\nMAIL FROM:<>\r\n")
    events = driver.core.receive(b"RCPT TO:<alice@example.test>\r\nNOOP\r\n", driver.now)
    assert [type(event) for event in events] == [core.Resolve]
    assert driver.core.receive(b"NOOP\r\n", driver.now) == []
    resolve = events[0]
    assert isinstance(resolve, core.Resolve)
    answer = driver.core.resolved(resolve.state.resolve(resolve.address, smtputf8=False, size=None), driver.now)
    assert answer == [
        core.Send(b"250 2.1.5 Recipient OK\r\n"),
        core.Send(b"250 2.0.0 OK\r\n"),
        core.Send(b"250 2.0.0 OK\r\n"),
    ]


def test_hard_error_limit_closes(tmp_path):
    driver = Driver(tmp_path, "smtp")
    hard, _ = driver.host.limits.error_limits("smtp")
    out = driver.feed(b"MAIL FROM:<>\r\n" * hard)
    assert out.decode().splitlines()[-1] == "421 4.7.0 Too many errors, closing connection"
    assert driver.closed is not None


def test_too_many_unknown_commands(tmp_path):
    driver = Driver(tmp_path)
    out = driver.feed(b"WHAT\r\n" * core.MAX_UNKNOWN_COMMANDS)
    assert out.decode().splitlines()[-1] == "421 4.7.0 Too many unrecognized commands, closing connection"


def test_proxy_v1_and_v2_set_the_client(tmp_path):
    driver = Driver(tmp_path, proxy_protocol=True, proxy_trusted=["192.0.2.0/24"])
    assert driver.out == b""
    driver.feed(b"PROXY TCP4 198.51.100.9 192.0.2.1 5000 24")
    assert driver.out == b""
    driver.feed(b"\r\nLHLO c\r\n")
    assert driver.host.admitted == ["198.51.100.9"]
    assert driver.lines()[0].startswith("220 ")

    v2 = Driver(tmp_path, proxy_protocol=True, proxy_trusted=["192.0.2.0/24"])
    body = bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2]) + struct.pack("!HH", 1234, 24)
    header = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    for byte in header:
        v2.feed(bytes([byte]))
    assert v2.host.admitted == ["10.0.0.1"]


def test_proxy_refused_from_untrusted_peer_and_invalid_header_closes(tmp_path):
    driver = Driver(tmp_path, proxy_protocol=True)
    assert driver.out == b"554 5.7.1 PROXY header not accepted from this address\r\n"
    assert driver.closed == core.Close(drain=True)
    bad = Driver(tmp_path, proxy_protocol=True, proxy_trusted=["192.0.2.0/24"])
    bad.feed(b"EHLO x\r\n")
    assert bad.out == b"" and bad.closed == core.Close() and bad.host.admitted == []


def test_starttls_drops_pipelined_plaintext_and_resets(tmp_path):
    driver = Driver(tmp_path, "smtp", tls={"cert": "c.pem", "key": "k.pem"})
    assert b"STARTTLS" in driver.feed(b"EHLO c\r\n")
    assert driver.feed(b"STARTTLS\r\nMAIL FROM:<injected>\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert driver.tls_started == 1 and driver.core.helo is None
    assert driver.core.tls_started(driver.now) == []
    assert driver.feed(b"MAIL FROM:<>\r\n") == b"503 5.5.1 Send LHLO/EHLO first\r\n"
    out = driver.feed(b"EHLO c\r\n")
    assert b"STARTTLS" not in out
    assert driver.feed(b"STARTTLS\r\n") == b"503 5.5.1 TLS already active\r\n"


def test_auth_plain_and_login(tmp_path):
    users = tmp_path / "users"
    users.write_text("")
    tls = {"cert": "c.pem", "key": "k.pem"}
    driver = Driver(tmp_path, "smtp", tls_active=True, tls=tls, auth={"users_file": str(users)})
    assert b"AUTH PLAIN LOGIN" in driver.feed(b"EHLO c\r\n")
    plain = base64.b64encode(b"\0alice\0wrong").decode()
    assert driver.feed(f"AUTH PLAIN {plain}\r\n".encode()) == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert driver.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert driver.feed(base64.b64encode(b"alice") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert driver.feed(base64.b64encode(b"secret") + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    assert driver.feed(b"AUTH PLAIN\r\n") == b"503 5.5.1 Already authenticated\r\n"


def test_shutdown_after_delivery_says_421(tmp_path):
    driver = Driver(tmp_path)
    driver.host.shutting_down = True
    out = driver.feed(TRANSACTION + b"x\r\n.\r\n").decode().splitlines()
    assert out[-1] == "421 4.3.2 Service shutting down, try again later"
    assert driver.closed is not None


def _session_script() -> bytes:
    return (
        TRANSACTION
        + b"Return-Path: <old>\r\nSubject: a\r\n\r\n.\r\n"[:0]
        + b"Subject: a\r\n\r\nline.\r\n..\r\n\r.\r\nx\n.\nz\r\n.\r\n"
        + b"MAIL FROM:<>\r\nRCPT TO:<carol@example.test>\r\nBDAT 7\r\nab\r\n.\r\rBDAT 4 LAST\r\n\ncd\r"
        + b"NOOP\r\nQUIT\r\n"
    )


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_session_script())), max_size=20))
def test_any_cut_of_the_input_gives_the_same_replies_and_stored_bytes(tmp_path_factory, cuts):
    script = _session_script()
    whole = Driver(tmp_path_factory.mktemp("whole"))
    whole.feed(script)
    driver = Driver(tmp_path_factory.mktemp("cut"))
    bounds = [0, *sorted(cuts), len(script)]
    for start, end in itertools.pairwise(bounds):
        driver.feed(script[start:end])
    assert driver.out == whole.out
    assert driver.stored == whole.stored
    assert whole.stored == [b"Subject: a\n\nline.\n.\n\r.\nx\n.\nz\n", b"ab\n.\r\ncd\r"]
    assert whole.out.decode().splitlines()[-1] == "221 2.0.0 Bye"


@pytest.mark.parametrize("piece", [1, 3, 7])
def test_byte_at_a_time_session(tmp_path, piece):
    script = _session_script()
    whole = Driver(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    whole.feed(script)
    driver = Driver(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    for start in range(0, len(script), piece):
        driver.feed(script[start : start + piece])
    assert (driver.out, driver.stored) == (whole.out, whole.stored)
