"""Sieve runtime errors reach the log as the engine raised them, and every action kind has a handler.

A runtime error travels from the engine to the ``sieve_error`` log line as a record (file, line,
message), never as text parsed back: a script whose path looks like ``NAME:7: ...`` is still named
whole. An action the delivery layer has no handler for is an error, never silently dropped.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from mda import filtering
from mda.config import load
from mda.sieve import Action, Keep
from mda.storage.base import Mailbox
from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.mdaproc import RunningServer

CONFLICT_SCRIPT = """require ["reject", "fileinto"];
fileinto "INBOX";
reject "not wanted";
"""


def test_runtime_error_names_the_whole_file_and_its_line(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """The old text round trip split ``DIR:7: x/before.sieve:3: msg`` at the first ``:N: ``."""
    root = tmp_path / "mail"
    rules = tmp_path / "rules:7: x"
    rules.mkdir()
    script = rules / "before.sieve"
    script.write_text(CONFLICT_SCRIPT)
    config = basic_config(root, sieve={"before": [str(script)]}, state_dir=str(root / "state"), log_format="json")
    server = start_mda(config)
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.example.org")
        rcpt, replies = transaction(client, "sender@example.org", ["alice@example.test"], b"Subject: x\n\nbody\n")
    assert [r.code for r in rcpt + replies] == [250, 250]
    assert len(list((root / "example.test" / "alice" / "Maildir" / "new").iterdir())) == 1  # the implicit keep
    server.wait_for_log("sieve_error")
    [event] = [json.loads(line) for line in server.log().splitlines() if '"sieve_error"' in line]
    assert (event["kind"], event["file"], event["line"]) == ("runtime", str(script), 3)
    assert event["message"] == "reject action conflicts with the store action at line 2"
    delivery = server.wait_for_log("runtime error")
    assert f"runtime error {script}:3: reject action conflicts" in delivery  # the delivery line's reason


def test_every_action_the_engine_produces_has_a_delivery_handler() -> None:
    assert set(filtering.ACTION_HANDLERS) == set(typing.get_args(Action))


class _Unknown:
    """An action kind the delivery layer does not know (as a new engine action would be)."""


def test_an_unknown_action_is_an_error_not_ignored(tmp_path: Path) -> None:
    config_path = tmp_path / "mda.yaml"
    config_path.write_text(json.dumps(basic_config(tmp_path / "mail")))
    config = load(config_path)
    plan = filtering.Plan()
    mailbox = Mailbox("maildir", tmp_path / "mail" / "Maildir")
    with pytest.raises(filtering.UnknownAction, match="_Unknown"):
        filtering.apply_actions(config, plan, mailbox, [Keep(), _Unknown()])
    assert filtering.apply_actions(config, filtering.Plan(), mailbox, [Keep()]) is None
