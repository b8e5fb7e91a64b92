"""A ``state:`` store that cannot be used at all (nothing listens, or the password file is missing) never
bounces: the message is stored, no vacation reply goes out, and ``state_error`` is logged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.peers.dovecot import free_port
from tests.sieve_delivery.conftest import Sink, smtp_sink
from tests.sieve_delivery.test_sieve_delivery import VACATION_SCRIPT, maildir, stored, write_script
from tests.statestore.test_shared_state_postgres import _message, _send

__all__ = ["smtp_sink"]


@pytest.mark.parametrize("broken", ["nothing listens", "password file missing"])
def test_an_unusable_store_delivers_without_reply(
    tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink, broken: str
) -> None:
    root = tmp_path / "mail"
    write_script(root, VACATION_SCRIPT)
    state: dict[str, str] = {"url": f"postgresql://mda@127.0.0.1:{free_port()}/mail", "timeout": "2s"}
    if broken == "password file missing":
        state["password_file"] = str(tmp_path / "missing-password")
    config = basic_config(
        root,
        duplicate_window="1d",
        state=state,
        sieve={"path": "{home}/active.sieve"},
        submission={"host": "127.0.0.1", "port": smtp_sink.port},
    )
    server = start_mda(config)
    writer = "someone@example.org"
    assert _send(server, _message("same@remote.test", writer), writer) == (250, "2.0.0")
    assert _send(server, _message("same@remote.test", writer), writer) == (250, "2.0.0")
    assert len(stored(maildir(root))) == 2  # no suppression without the record: a duplicate, never a loss
    log = server.wait_for_log("record=vacation")
    assert "event=state_error" in log and "record=duplicate" in log
    assert smtp_sink.messages == []
