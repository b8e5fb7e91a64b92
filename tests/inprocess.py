"""For tests that run mda's server side inside the test's own event loop, through real sockets: a
configuration with one LMTP listener delivering to mbox files (an mbox dot-lock the test holds keeps a
delivery waiting), and a reader of final reply lines on an asyncio stream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import basic_config

REPLY_TIMEOUT = 20.0


def mbox_lmtp_config(tmp_path: Path, **settings: Any) -> Path:
    """``tmp_path/mda.yaml``: an LMTP listener on a free port, mail to ``tmp_path/USER.mbox``."""
    document = basic_config(
        tmp_path,
        listeners=[{"protocol": "lmtp", "bind": "127.0.0.1:0"}],
        storage={"format": "mbox", "path": f"{tmp_path}/{{user}}.mbox", "fsync": False, "lock_timeout": "20s"},
        **settings,
    )
    path = tmp_path / "mda.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def reply_lines(reader: asyncio.StreamReader, count: int) -> list[str]:
    """The next ``count`` final reply lines (continuation lines skipped); fails if the server hangs up."""
    lines: list[str] = []
    while len(lines) < count:
        line = (await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)).decode().rstrip("\r\n")
        assert line, f"connection closed after {lines}"
        if line[3:4] != "-":
            lines.append(line)
    return lines
