"""The waiting helpers fail loudly: a timed-out wait names what it waited for and what it saw."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.mdaproc import RunningServer
from tests.waiting import wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([0, "", "ready"])
    assert wait_for(lambda: next(values), timeout=5, interval=0) == "ready"


def test_wait_for_fails_with_what_it_saw() -> None:
    with pytest.raises(AssertionError, match=r"the answer not reached within 0\.1 s; last seen: 'still 41'"):
        wait_for(lambda: False, timeout=0.1, what="the answer", describe=lambda: "still 41")


def test_wait_for_log_fails_with_the_whole_log(tmp_path: Path) -> None:
    (tmp_path / "stderr.log").write_text("event=session_open client=127.0.0.1\n")
    server = RunningServer(process=subprocess.Popen(["true"]), directory=tmp_path, config_path=tmp_path / "mda.yaml")
    server.process.wait()
    assert "session_open" in server.wait_for_log("session_open", timeout=1)
    with pytest.raises(AssertionError, match=re.escape("event=session_open client=127.0.0.1")):
        server.wait_for_log("event=delivery", timeout=0.1)
