"""Log lines an operator can grep: ``key=value`` text by default, one JSON object per line on request.

Addresses appear in logs (never in metrics). Values are quoted when they hold spaces or quotes, and
control characters are escaped, so a hostile address cannot forge a second log line.

The process's log state hangs off the ``mda`` logger, where ``logging`` keeps it anyway: its one handler
(``_Output``) owns the pending records and the writer thread, and its ``_Context`` filter the fields every line
carries. This module keeps no state of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import re
import sys
import threading
from typing import Any, TextIO

from mda.enums import LogFormat, LogLevel

LOGGER_NAME = "mda"
logger = logging.getLogger(LOGGER_NAME)


_NEEDS_QUOTES = re.compile(r'[ "=\\]')


def _text_value(value: Any) -> str:
    if type(value) is int:
        return str(value)
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if not text or _NEEDS_QUOTES.search(text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class _EventFormatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"level": record.levelname.lower(), "event": record.getMessage()}
        fields.update(getattr(record, "context", {}))
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["exception"] = record.exc_text.replace("\n", " | ")
        if self.json_lines:
            return json.dumps(fields, ensure_ascii=False, default=str)
        return " ".join([f"{key}={_text_value(value)}" for key, value in fields.items()])


LOG_WRITE_DELAY = 0.05
"""Seconds an INFO line logged on an event loop may wait for the writer thread. Waking a thread is a
system call and, with the thread on another core, an interrupt to it: once per line it was about a tenth
of the event loop's time under load at 4 KiB. Lines of the next 50 ms share one wake-up and one write;
warnings and errors, and lines logged off a loop, wake the writer at once."""


class _Output(logging.Handler):
    """The ``mda`` logger's handler: passes records, unformatted, to its writer thread, which formats and
    writes them to ``target`` in batches, so formatting and the write to standard error (a file on the
    mail disk, busy with fsyncs, in some set-ups) never hold up a session (LOG_WRITE_DELAY)."""

    def __init__(self, target: logging.StreamHandler[TextIO]) -> None:
        super().__init__()
        self.target = target
        self.records: collections.deque[logging.LogRecord] = collections.deque()
        self.wake = threading.Event()
        self.wake_loop: asyncio.AbstractEventLoop | None = None
        """The loop with a wake-up of the writer scheduled, if any."""
        self.stopping = False
        self.writer: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start a writer thread with nothing pending (a forked child has none of its parent's threads, and
        its parent writes what the parent logged)."""
        self.records = collections.deque()
        self.wake = threading.Event()
        self.wake_loop = None
        self.stopping = False
        self.writer = threading.Thread(target=self._write_batches, name="mda-log", daemon=True)
        self.writer.start()

    def stop(self) -> None:
        """Write every pending line and stop the writer thread."""
        writer = self.writer
        if writer is not None:
            self.writer = None
            self.stopping = True
            self.wake.set()
            writer.join()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)
        if record.levelno >= logging.WARNING:
            self.wake.set()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.wake.set()
            return
        if self.wake_loop is not loop:  # no wake-up pending on this loop (one pending on a loop that stopped
            self.wake_loop = loop  # before it ran does not count)
            loop.call_later(LOG_WRITE_DELAY, self.wake.set)

    def _write_batches(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            self.wake_loop = None  # before taking the records: a record added later schedules a wake-up
            batch: list[str] = []
            records = self.records
            while records:
                record = records.popleft()
                try:
                    batch.append(self.target.format(record) + "\n")
                except Exception:
                    self.target.handleError(record)
            if batch:
                self._write("".join(batch))
            if self.stopping and not records:
                return

    def _write(self, text: str) -> None:
        stream = self.target.stream
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken standard error loses lines, never a session
            pass


class _Context(logging.Filter):
    """Fields added to every line of this process (e.g. ``worker=1``), so lines of several workers can be
    told apart; taken as the line is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = self.fields
        return True


def _output() -> _Output | None:
    return next((handler for handler in logger.handlers if isinstance(handler, _Output)), None)


def setup(log_format: LogFormat, level: LogLevel, stream: TextIO | None = None) -> None:
    """Send mda's log lines to standard error (or ``stream``) in the configured format (again on reload)."""
    flush()
    target = logging.StreamHandler(stream or sys.stderr)
    target.setFormatter(_EventFormatter(json_lines=log_format == LogFormat.JSON))
    logger.handlers[:] = [_Output(target)]
    logger.setLevel(level.upper())
    logger.propagate = False
    # Lines carry no thread, process or process-name field (``worker=`` names the process): skip their
    # look-up in every ``LogRecord`` (the logging HOWTO's "Optimization"), a cost paid per delivery.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiosmtpd logs every command with its addresses at INFO under "mail.log": keep it quiet.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def flush() -> None:
    """Write every pending line and stop the writer thread (at exit, before a reload's new format)."""
    output = _output()
    if output is not None:
        output.stop()


def _restart_in_child() -> None:
    """A forked worker has no writer thread: start its own (the parent's pending lines are left behind)."""
    output = _output()
    if output is not None:
        output.start()


os.register_at_fork(after_in_child=_restart_in_child)
atexit.register(flush)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (no caller look-up: the event name says where it comes from)."""
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(LOGGER_NAME, level, "", 0, name, (), None, extra={"fields": fields}))


def set_context(**fields: Any) -> None:
    """Add ``fields`` to every later line of this process."""
    context = next((item for item in logger.filters if isinstance(item, _Context)), None)
    if context is None:
        context = _Context()
        logger.addFilter(context)
    context.fields.update(fields)
