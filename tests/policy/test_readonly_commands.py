"""The explaining commands (``resolve``, ``check-config``, ``sieve-check``) never write, even as root.

A ``maildirsize`` rebuilt by ``mda resolve`` run as root became ``root:root 0600``: the mail user could
no longer update it and every later delivery failed with ``451 4.3.0``. These tests build a mail tree
owned by an unprivileged user, with every reason for a write that the delivery path has (a stale, a
missing and an over-limit ``maildirsize``, a missing Maildir, Sieve scripts with ``vacation`` and
``fileinto :create``, a vacation record, a state directory that does not exist), run each command as
root, and compare a snapshot of every entry (path, bytes, uid, gid, mode) before and after.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import basic_config

pytestmark = pytest.mark.root

MAIL_UID = pwd.getpwnam("nobody").pw_uid
MAIL_GID = pwd.getpwnam("nobody").pw_gid
SCRIPT = b"""require ["vacation", "fileinto", "mailbox"];
if header :contains "subject" "list" { fileinto :create "Lists"; }
vacation :days 1 :subject "Away" "I am away.";
"""
GLOBAL_SCRIPT = b'require "fileinto";\nif header :contains "subject" "spam" { fileinto "Junk"; }\n'
MESSAGE = (
    b"From: sender@remote.test\r\nTo: erin@example.test\r\nSubject: a list message\r\n"
    b"Message-ID: <ro@remote.test>\r\n\r\nbody\r\n"
)

Entry = tuple[str, bytes | str | None, int, int, int]


def snapshot(*roots: Path) -> list[Entry]:
    """(path, content or link target, uid, gid, mode) of every entry under ``roots``, the roots included."""
    entries: list[Entry] = []
    for root in roots:
        paths = [root, *sorted(root.rglob("*"))] if root.exists() else []
        for path in paths:
            st = path.lstat()
            if path.is_symlink():
                content: bytes | str | None = os.readlink(path)
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = None
            entries.append((str(path), content, st.st_uid, st.st_gid, st.st_mode))
    return entries


def message_file(directory: Path, name: str, size: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name},S={size}").write_bytes(b"x" * size)


def maildir(root: Path, user: str) -> Path:
    path = root / "example.test" / user / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def build_tree(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path / "mail"
    state = tmp_path / "state"
    alice = maildir(root, "alice")  # maildirsize with another limit: a delivery would rebuild it
    message_file(alice / "new", "1.M1P1.host", 300)
    message_file(alice / "cur", "2.M2P2.host", 200)
    (alice / "maildirsize").write_bytes(b"5000S\n100 1\n")
    bob = maildir(root, "bob")  # no maildirsize at all
    message_file(bob / "new", "3.M3P3.host", 400)
    message_file(bob / ".Lists" / "cur", "4.M4P4.host", 100)
    carol = maildir(root, "carol")  # over the limit with deltas: a delivery would rebuild it
    message_file(carol / "new", "5.M5P5.host", 100)
    (carol / "maildirsize").write_bytes(b"2048S\n1000 1\n1500 1\n")
    erin = maildir(root, "erin")  # Sieve with vacation and fileinto :create, a vacation record
    message_file(erin / "new", "6.M6P6.host", 100)
    (erin.parent / "active.sieve").write_bytes(SCRIPT)
    (tmp_path / "global.sieve").write_bytes(GLOBAL_SCRIPT)
    state.mkdir()
    with sqlite3.connect(state / "vacation.sqlite") as db:
        db.execute(
            "CREATE TABLE replies (recipient TEXT NOT NULL, sender TEXT NOT NULL,"
            " handle TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (recipient, sender, handle))"
        )
    for path in [root, *root.rglob("*"), state, *state.rglob("*")]:
        os.chown(path, MAIL_UID, MAIL_GID, follow_symlinks=False)
        path.chmod(0o700 if path.is_dir() else 0o600)
    config = basic_config(
        root,
        users={
            "alice@example.test": {"quota": "10K"},
            "bob@example.test": {"quota": "1K", "quota_messages": 10},
            "carol@example.test": {"quota": "2K"},
            "dave@example.test": {"quota": "1K"},
            "erin@example.test": {"quota": "1M"},
        },
        aliases={"team@example.test": ["alice@example.test", "bob@example.test"]},
        sieve={"path": "{home}/active.sieve", "before": [str(tmp_path / "global.sieve")]},
        state_dir=str(state),
        duplicate_window="1d",
    )
    config["storage"]["owner"] = "nobody"
    config["storage"]["create_folders"] = True
    return root, state, config


def mda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mda", *args], capture_output=True, text=True, timeout=60)


def test_explaining_commands_leave_the_mail_tree_untouched(tmp_path: Path) -> None:
    root, state, config = build_tree(tmp_path)
    config_path = tmp_path / "mda.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    missing_state = tmp_path / "no-state"
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump({**config, "state_dir": str(missing_state)}, sort_keys=False))
    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)
    before = snapshot(root, state, tmp_path / "global.sieve")
    commands: list[tuple[str, ...]] = []
    for path in (config_path, other_path):
        c = ("--config", str(path))
        commands += [
            ("resolve", *c, "alice@example.test", "--size", "100"),
            ("resolve", *c, "alice+lists@example.test"),
            ("resolve", *c, "bob@example.test", "--size", "600"),
            ("resolve", *c, "carol@example.test"),
            ("resolve", *c, "dave@example.test", "--size", "10"),
            ("resolve", *c, "team@example.test", "--size", "10"),
            ("resolve", *c, "erin@example.test", "--message", str(message), "-f", "sender@remote.test"),
            ("resolve", *c, "alice@example.test", "--message", str(message), "-f", "sender@remote.test"),
            ("check-config", *c),
            ("check-config", *c, "--print"),
            ("check-config", *c, "--against", str(config_path)),
            ("sieve-check", *c, "erin@example.test"),
            ("sieve-check", *c, "alice@example.test"),
        ]
    outputs = {}
    for command in commands:
        result = mda(*command)
        assert result.returncode in (0, 1), (command, result.stdout, result.stderr)
        outputs[command] = result.stdout
    assert snapshot(root, state, tmp_path / "global.sieve") == before
    assert not missing_state.exists()
    # The answers are still the real ones: usage summed from the Maildir where a rebuild was due.
    c = ("--config", str(config_path))
    assert outputs[("resolve", *c, "alice@example.test", "--size", "100")].endswith("reply: 250 2.1.5 Recipient OK\n")
    assert "reply: 552 5.2.2" in outputs[("resolve", *c, "bob@example.test", "--size", "600")]
    assert "reply: 250 2.1.5" in outputs[("resolve", *c, "carol@example.test")]
    erin = outputs[("resolve", *c, "erin@example.test", "--message", str(message), "-f", "sender@remote.test")]
    assert "fileinto 'Lists'" in erin, erin
