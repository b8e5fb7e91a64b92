"""Stateful fuzzing of a live server: random command sequences and data, invariants checked each step.

Invariants: one reply per command; after DATA or BDAT LAST one reply per accepted recipient (LMTP); the
server never crashes; nothing is written outside the mail root; no descriptor growth. Short in CI
(``max_examples=30``), longer with ``-m slow``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.clients import Client
from tests.conftest import basic_config

COMMANDS = [
    "LHLO fuzz.test",
    "EHLO fuzz.test",
    "HELO fuzz.test",
    "NOOP",
    "RSET",
    "VRFY alice",
    "HELP",
    "MAIL FROM:<>",
    "MAIL FROM:<s@remote.test>",
    "MAIL FROM:<s@remote.test> SIZE=10 RET=FULL ENVID=x",
    "MAIL FROM:<bad",
    "RCPT TO:<alice@example.test>",
    "RCPT TO:<bob@example.test> NOTIFY=SUCCESS",
    "RCPT TO:<nobody@example.test>",
    "RCPT TO:<../x@example.test>",
    "RCPT TO:<alice@example.test> NOTIFY=BOGUS",
    "STARTTLS",
    "AUTH PLAIN",
    "BDAT x",
    "DATA x",
    "XYZZY",
]
TEXT = st.binary(max_size=300).map(lambda b: b.replace(b"\r\n.\r\n", b"\r\n..\r\n"))


def _machine(server_address: tuple[str, int], root: Path, pid: int) -> type[RuleBasedStateMachine]:
    class Session(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.client = Client(server_address, timeout=10)
            self.accepted = 0
            self.in_mail = False
            self.fds = len(os.listdir(f"/proc/{pid}/fd"))

        def _reply(self, line: str | bytes) -> int:
            reply = self.client.cmd(line)
            if reply.code == 421:
                self.client.close()
                self.client = Client(server_address, timeout=10)
                self.accepted, self.in_mail = 0, False
            return reply.code

        @rule(command=st.sampled_from(COMMANDS))
        def command(self, command: str) -> None:
            code = self._reply(command)
            verb = command.split()[0]
            if verb in ("LHLO", "EHLO", "HELO", "RSET") and code == 250:
                self.accepted, self.in_mail = 0, False
            elif verb == "MAIL" and code == 250:
                self.in_mail, self.accepted = True, 0
            elif verb == "RCPT" and code == 250:
                self.accepted += 1

        @rule(junk=st.binary(max_size=200))
        def junk_line(self, junk: bytes) -> None:
            line = junk.replace(b"\n", b" ").replace(b"\r", b" ")
            if line.strip().upper().startswith((b"DATA", b"BDAT", b"AUTH", b"STARTTLS", b"QUIT")) or not line:
                return
            code = self._reply(line)
            if code == 250 and line.strip().upper().startswith((b"RSET", b"LHLO")):
                self.accepted, self.in_mail = 0, False

        @rule(body=TEXT)
        def data(self, body: bytes) -> None:
            start = self.client.cmd("DATA")
            if start.code != 354:
                return
            self.client.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
            replies = [self.client.read_reply() for _ in range(max(self.accepted, 1))]
            assert all(r.code in (250, 451, 452, 550, 552, 554) for r in replies), replies
            self.accepted, self.in_mail = 0, False
            assert self.client.cmd("NOOP").code == 250

        @rule(body=TEXT, last=st.booleans())
        def bdat(self, body: bytes, last: bool) -> None:
            self.client.send(f"BDAT {len(body)}{' LAST' if last else ''}\r\n".encode() + body)
            if last and self.in_mail and self.accepted:
                [self.client.read_reply() for _ in range(self.accepted)]
                self.accepted, self.in_mail = 0, False
            else:
                self.client.read_reply()
            assert self.client.cmd("NOOP").code in (250, 421)

        @invariant()
        def nothing_outside_the_root(self) -> None:
            outside = [
                p
                for p in root.parent.rglob("*")
                if p.is_file() and root not in p.parents and "server" not in p.relative_to(root.parent).parts[0]
            ]
            assert outside == []

        def teardown(self) -> None:
            self.client.close()
            assert len(os.listdir(f"/proc/{pid}/fd")) <= self.fds + 1

    return Session


def _run(start_mda, tmp_path: Path, examples: int) -> None:
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, workers=1))  # one process: the one whose descriptors are counted
    machine = _machine(server.lmtp, root, server.process.pid)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
    assert server.process.poll() is None
    with socket.create_connection(server.lmtp, timeout=5) as sock:
        assert sock.recv(100).startswith(b"220")


def test_fuzz_live_server_briefly(start_mda, tmp_path):
    _run(start_mda, tmp_path, 30)


@pytest.mark.slow
def test_fuzz_live_server_long(start_mda, tmp_path):
    _run(start_mda, tmp_path, 1000)
