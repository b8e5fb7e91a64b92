"""Run ``mda serve`` as a real process in its own process group, and find its ports from its output."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.waiting import wait_for

START_TIMEOUT = 15.0
_LISTENING = re.compile(r"^listening (lmtp|smtp|policy) (?:unix:(\S+)|\[?([0-9a-fA-F:.]+)\]?:(\d+))$")


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    directory: Path
    config_path: Path
    tcp: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    unix: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def lmtp(self) -> tuple[str, int]:
        return self.tcp["lmtp"][0]

    @property
    def smtp(self) -> tuple[str, int]:
        return self.tcp["smtp"][0]

    @property
    def stderr_path(self) -> Path:
        return self.directory / "stderr.log"

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it contains ``text`` (lines are written by a background thread, a moment later);
        ``AssertionError`` with the whole log when it does not within ``timeout``."""

        def containing() -> str:
            log = self.log()
            return log if text in log else ""

        return wait_for(containing, timeout, what=f"log line {text!r}", describe=self.log)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, then kill the whole process group; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def start_server(config: dict[str, Any] | str, directory: Path, *, args: tuple[str, ...] = ()) -> RunningServer:
    """Write the config, start ``python -m mda serve``, wait for the start-up lines.

    An empty ``config`` text runs the embedded default (no ``--config``), in ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "mda.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    config_path.write_text(text)
    config_args = ["--config", str(config_path)] if text else []
    stdout_path = directory / "stdout.log"
    with open(stdout_path, "wb") as out, open(directory / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "mda", "serve", *config_args, *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            start_new_session=True,
        )
    server = RunningServer(process=process, directory=directory, config_path=config_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        lines = stdout_path.read_text(errors="replace").splitlines()
        if any(line.startswith("delivering to ") for line in lines):
            server.lines = lines
            for line in lines:
                match = _LISTENING.match(line)
                if match and match.group(2):
                    server.unix.setdefault(match.group(1), []).append(match.group(2))
                elif match:
                    server.tcp.setdefault(match.group(1), []).append((match.group(3), int(match.group(4))))
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"mda did not start: {(directory / 'stderr.log').read_text(errors='replace')}")
