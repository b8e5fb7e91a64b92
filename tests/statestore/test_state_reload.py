"""A reload that moves the SQLite records (``state_dir``) takes effect for the next message (PostgreSQL:
test_shared_state_postgres.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.conftest import basic_config
from tests.ops.helpers import scrape, value
from tests.policy.helpers import maildir_messages
from tests.policy.test_duplicates import send
from tests.waiting import wait_for


def test_a_reload_that_changes_state_dir_uses_the_new_records(start_mda, tmp_path: Path) -> None:
    first, second = tmp_path / "state-a", tmp_path / "state-b"
    config = basic_config(
        tmp_path / "mail", duplicate_window="1d", state_dir=str(first), metrics={"bind": "127.0.0.1:0"}
    )
    server = start_mda(config)
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    maildir = tmp_path / "mail" / "example.test" / "alice" / "Maildir"
    assert len(maildir_messages(maildir)) == 1
    server.config_path.write_text(yaml.safe_dump({**config, "state_dir": str(second)}))
    server.signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(server), "mda_config_reloads_total", result="success") >= 1)
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert len(maildir_messages(maildir)) == 2
    assert (second / "duplicates.sqlite").is_file()
    server.config_path.write_text(yaml.safe_dump(config))  # back to the first records: stored there already
    server.signal(signal.SIGHUP)
    wait_for(lambda: value(scrape(server), "mda_config_reloads_total", result="success") >= 2)
    assert send(server, ["alice@example.test"]) == [(250, "2.0.0")]
    assert len(maildir_messages(maildir)) == 2
