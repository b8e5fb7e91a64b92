"""LDA mode: ``mda deliver``, one message on standard input, delivered like the server would.

An MTA (Postfix's ``mailbox_command``, or ``pipe(8)``) runs ``mda deliver [-f SENDER] RECIPIENT...``
with the message on standard input, as dovecot-lda and procmail are run. The same ``Policy`` resolves
each recipient, the same trace block goes in front, and ``deliver_transaction`` (with LMTP's
contract, one outcome per recipient, and the server's duplicate suppression) stores it, so the result is byte for
byte what an LMTP delivery would have stored.

What the MTA learns (README's command table, "A short tour"):

- the exit code, from ``sysexits.h``: 0 delivered, 67 ``EX_NOUSER``, 65 ``EX_DATAERR``, 73
  ``EX_CANTCREAT``, 77 ``EX_NOPERM``, 75 ``EX_TEMPFAIL``. Postfix retries 75 and bounces the others.
  With several recipients: 75 when any failed temporarily (the MTA retries the whole command, and a
  copy already delivered may be delivered twice, never lost), else the first permanent code;
- one line per recipient on standard output, starting with the enhanced status code (RFC 3463):
  ``5.2.2 alice@example.test: Mailbox full``. Postfix's local(8) and pipe(8) take an enhanced code at
  the start of the command's output as the delivery status, so the bounce says what mda meant.

A configuration that cannot be loaded is a temporary failure (75), so a typo in the file makes the MTA
queue mail instead of bouncing it. Log lines go to standard error only after the status lines, because
the MTA reads the status from the very first bytes of the combined output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from mda import logs, replies
from mda.addresses import AddressError, parse_mailbox, parse_path
from mda.config import Config, load
from mda.dataread import DataResult, HeaderFilter
from mda.delivery import LMTP, Outcome, Recipient, Transaction, deliver_transaction, failure_outcomes
from mda.enums import BareNewline
from mda.policy import Policy, Resolution
from mda.replies import Reply
from mda.spool import Spool
from mda.trace import TraceInfo, new_queue_id
from mda.yamlsource import ConfigError

# sysexits.h (BSD), the exit codes every MTA understands from a delivery command.
EX_OK = 0
EX_DATAERR = 65
EX_NOUSER = 67
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77

READ_BLOCK = 64 * 1024
PROTOCOL = "local"
"""The ``with`` word of the Received field: not LMTP/SMTP, the message came from a local program."""
LOCAL_HOST = "localhost"

BAD_CONFIGURATION = Reply(451, "4.3.5", "mda configuration cannot be loaded")
"""RFC 3463 X.3.5: system incorrectly configured; temporary so the MTA keeps the mail queued."""
READ_FAILED = Reply(451, "4.3.0", "cannot read the message from standard input")


@dataclass(frozen=True)
class RecipientStatus:
    """What ``mda deliver`` reports for one recipient: its address, reply and logged reason."""

    address: str
    reply: Reply
    reason: str = ""

    @property
    def line(self) -> str:
        """``5.2.2 alice@example.test: Mailbox full``: the enhanced code first (Postfix reads it there)."""
        return f"{self.reply.enhanced} {self.address}: {self.reply.text}"


def exit_code_for(reply: Reply) -> int:
    """The ``sysexits.h`` code for one recipient's reply (by its enhanced status code, RFC 3463 §3)."""
    if reply.is_success:
        return EX_OK
    if reply.is_temporary:
        return EX_TEMPFAIL
    _, subject, detail = [*reply.enhanced.split("."), "", "", ""][:3]
    if subject == "1" and detail == "3":
        return EX_DATAERR  # X.1.3: bad address syntax
    if subject == "1" or (subject, detail) == ("7", "1"):
        return EX_NOUSER  # X.1.1 unknown user; X.7.1 a domain that is not ours (relay denied)
    if subject in ("3", "4", "6"):
        return EX_DATAERR  # too big, loop or too many hops, content (bare newline, SMTPUTF8)
    if subject == "7":
        return EX_NOPERM
    return EX_CANTCREAT  # X.2.x mailbox full or unavailable, and every other permanent failure


def combined_exit_code(statuses: Sequence[RecipientStatus]) -> int:
    """75 when any recipient failed temporarily, else the first permanent code, else 0."""
    codes = [exit_code_for(status.reply) for status in statuses]
    if EX_TEMPFAIL in codes:
        return EX_TEMPFAIL
    return next((code for code in codes if code != EX_OK), EX_OK)


class LocalReader:
    """Standard input to stored bytes: CRLF becomes LF, a leading mbox ``From `` line is dropped.

    The MTA's own trace fields at the very top (``Return-Path``, ``X-Original-To``, ``Delivered-To``,
    written by Postfix local(8) just before running the command) are replaced by mda's: ``Return-Path``
    fields are dropped everywhere as the server does (RFC 5321 §4.4), and a ``Delivered-To`` in that
    leading block is dropped here, since Postfix already ran its own loop check on it and mda's loop
    check must not take it for a loop. A ``Delivered-To`` further down still counts.
    """

    MTA_TRACE = (b"return-path:", b"x-original-to:", b"delivered-to:")

    def __init__(self, spool: Spool, *, max_size: int, normalize_bare: bool, max_header_size: int) -> None:
        self.spool = spool
        self.max_size = max_size
        self.normalize_bare = normalize_bare
        self.result = DataResult()
        self._filter = HeaderFilter(max_header_size)
        self._leading = True
        """Still inside the first line or the MTA's leading trace block: work line by line."""
        self._first_line = True
        self._dropping = False
        self._head = bytearray()
        self._carry_cr = False

    def feed(self, block: bytes) -> None:
        """Convert one block; a CR at its end waits for the next block (it may start a CRLF)."""
        if self._carry_cr:
            block = b"\r" + block
            self._carry_cr = False
        if block.endswith(b"\r"):
            block, self._carry_cr = block[:-1], True
        self._convert(block)

    def close(self) -> DataResult:
        if self._carry_cr:
            self._carry_cr = False
            self._convert(b"\r")
        if self._head:
            head, self._head = bytes(self._head), bytearray()
            self._store(head)
        tail = self._filter.flush()
        if tail:
            self._count_and_write(tail)
        return self.result

    def _convert(self, block: bytes) -> None:
        block = block.replace(b"\r\n", b"\n")
        lone_cr = block.count(b"\r")
        if lone_cr:
            # The same bare_newline policy as on the wire (``bare_newline``; RFC 5321 §2.3.8: CR and LF only as CRLF).
            self.result.bare_newlines += lone_cr
            if self.normalize_bare:
                block = block.replace(b"\r", b"\n")
        if self._leading:
            self._leading_lines(block)
        else:
            self._store(block)

    def _leading_lines(self, block: bytes) -> None:
        self._head += block
        while self._leading:
            end = self._head.find(b"\n")
            if end < 0:
                if len(self._head) > READ_BLOCK:
                    self._leading = False  # a hostile first line: stop looking, store as it is
                break
            line = bytes(self._head[: end + 1])
            lower = line.lower()
            if self._first_line and line.startswith(b"From "):
                drop = True  # the mbox envelope line local(8) writes first
            elif line[:1] in (b" ", b"\t") and not self._first_line:
                drop = self._dropping
            elif lower.startswith(self.MTA_TRACE):
                self._dropping = drop = lower.startswith(b"delivered-to:")
            else:
                self._leading = False
                break
            self._first_line = False
            del self._head[: end + 1]
            if not drop:
                self._store(line)
        if not self._leading:
            rest, self._head = bytes(self._head), bytearray()
            self._store(rest)

    def _store(self, data: bytes) -> None:
        self._count_and_write(self._filter.feed(data))

    def _count_and_write(self, stored: bytes) -> None:
        result = self.result
        result.size += len(stored)
        if self._filter.too_big:
            result.header_too_big = True  # refused as the server refuses it: the rest is read and dropped
        elif result.size > self.max_size:
            result.too_big = True
        elif stored:
            self.spool.write(stored)


def read_message(stream: BinaryIO, spool: Spool, config: Config) -> DataResult:
    """Read the whole of ``stream`` into ``spool`` (bounded memory: the spool spills to a file)."""
    limits = config.limits
    reader = LocalReader(
        spool,
        max_size=limits.max_message_size,
        normalize_bare=config.bare_newline == BareNewline.NORMALIZE,
        max_header_size=limits.max_header_size,
    )
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        reader.feed(block)
    return reader.close()


def resolve_recipients(policy: Policy, recipients: Sequence[str]) -> tuple[list[Resolution], list[RecipientStatus]]:
    """Accepted resolutions in order, and a status for each refused recipient (as RCPT would refuse)."""
    accepted: list[Resolution] = []
    refused: list[RecipientStatus] = []
    for text in recipients:
        try:
            address = parse_mailbox(text.strip().strip("<>"))
        except AddressError as error:
            refused.append(RecipientStatus(text, replies.BAD_ADDRESS_SYNTAX, str(error)))
            continue
        resolution = policy.resolve(address, smtputf8=True)
        if resolution.accepted:
            accepted.append(resolution)
        else:
            refused.append(RecipientStatus(resolution.address, resolution.reply, "; ".join(resolution.steps)))
    return accepted, refused


def run(
    config_path: Path | None,
    sender: str,
    recipients: Sequence[str],
    *,
    stdin: BinaryIO,
    stdout: TextIO,
) -> int:
    """Deliver the message on ``stdin``; print one status line per recipient; return the exit code."""
    try:
        config = load(config_path)
    except (ConfigError, OSError) as error:
        statuses = [RecipientStatus(r, BAD_CONFIGURATION, str(error)) for r in recipients]
        return _finish(statuses, stdout, errors=[str(error)])
    logs.setup(config.log_format, config.log_level)
    try:
        parsed_sender, _ = parse_path(sender) if sender not in ("", "<>") else (None, "")
    except AddressError:
        statuses = [RecipientStatus(r, replies.BAD_SENDER_SYNTAX, f"sender {sender!r}") for r in recipients]
        return _finish(statuses, stdout)
    sender_text = str(parsed_sender) if parsed_sender else ""

    accepted, refused = resolve_recipients(Policy(config), recipients)
    by_address: dict[str, RecipientStatus] = {s.address: s for s in refused}
    outcomes: list[Outcome] = []
    queue_id = new_queue_id()
    if accepted:
        txn = Transaction(
            queue_id=queue_id,
            sender=sender_text,
            recipients=[Recipient(resolution) for resolution in accepted],
            trace=TraceInfo(
                sender=sender_text,
                helo=LOCAL_HOST,
                client_ip="",
                hostname=config.hostname,
                protocol=PROTOCOL,
                queue_id=queue_id,
                timestamp=time.time(),
            ),
        )
        with Spool() as spool:
            try:
                data = read_message(stdin, spool, config)
            except OSError as error:
                outcomes = [Outcome(r, READ_FAILED, reason=str(error)) for r in txn.recipients]
                data = DataResult()
            else:
                try:
                    outcomes = deliver_transaction(config, txn, spool, data, LMTP)
                except Exception as error:  # every failure becomes a status line, never a traceback
                    outcomes = failure_outcomes(txn, error)
        for outcome in outcomes:
            by_address.setdefault(
                outcome.resolution.address, RecipientStatus(outcome.resolution.address, outcome.reply, outcome.reason)
            )
    statuses = [_status_for(text, by_address) for text in recipients]
    code = _finish(statuses, stdout)
    for outcome in outcomes:
        logs.event(
            "delivery",
            queue_id=queue_id,
            client=PROTOCOL,
            sender=sender_text,
            recipient=outcome.resolution.address,
            status=outcome.reply.status,
            code=outcome.reply.code,
            enhanced=outcome.reply.enhanced,
            size=data.size,
            stored=outcome.locations,
            reason=outcome.reason,
        )
    for status in refused:
        logs.event(
            "rcpt_refused",
            client=PROTOCOL,
            sender=sender_text,
            recipient=status.address,
            code=status.reply.code,
            enhanced=status.reply.enhanced,
        )
    return code


def _status_for(text: str, by_address: dict[str, RecipientStatus]) -> RecipientStatus:
    """The status of the recipient as given on the command line (its parsed form may differ)."""
    if text in by_address:
        return by_address[text]
    try:
        address = parse_mailbox(text.strip().strip("<>"))
        return by_address[str(address)]
    except (AddressError, KeyError):
        return RecipientStatus(text, replies.LOCAL_ERROR, "no outcome")


def _finish(statuses: Sequence[RecipientStatus], stdout: TextIO, errors: Sequence[str] = ()) -> int:
    """Print the status lines first (the MTA parses the start of the output), then any error detail."""
    for status in statuses:
        stdout.write(status.line + "\n")
    stdout.flush()
    for error in errors:
        print(f"mda: {error}", file=sys.stderr)
    return combined_exit_code(statuses)
