"""Log lines an operator can grep: ``key=value`` text by default, one JSON object per line on request.

Addresses appear in logs (never in metrics). Values are quoted when they hold spaces or quotes, and
control characters are escaped, so a hostile address cannot forge a second log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

LOGGER_NAME = "mda"
logger = logging.getLogger(LOGGER_NAME)
_context: dict[str, Any] = {}
"""Fields added to every line of this process (e.g. ``worker=1``), so lines of several workers can be told apart."""


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
        fields: dict[str, Any] = {"level": record.levelname.lower(), "event": record.getMessage(), **_context}
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info).replace("\n", " | ")
        if self.json_lines:
            return json.dumps(fields, ensure_ascii=False, default=str)
        return " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())


def setup(log_format: str, level: str) -> None:
    """Send mda's log lines to standard error in the configured format (called again on reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EventFormatter(json_lines=log_format == "json"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # aiosmtpd logs every command with its addresses at INFO under "mail.log": keep it quiet.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def set_context(**fields: Any) -> None:
    """Add ``fields`` to every later line of this process."""
    _context.update(fields)
