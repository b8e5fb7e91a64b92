"""``mda deliver`` (LDA mode) as a real process: exit codes, status lines, stored bytes.

The contract is README's command table ("A short tour"): sysexits codes, one line per recipient
starting with the enhanced status code, 75 for a bad configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mda.lda import EX_CANTCREAT, EX_DATAERR, EX_NOUSER, EX_OK, EX_TEMPFAIL, combined_exit_code, exit_code_for
from mda.lda import RecipientStatus as Status
from mda.replies import (
    BARE_NEWLINE,
    DELIVERED,
    HEADER_TOO_BIG,
    LOCAL_ERROR,
    LOOP_DETECTED,
    MAILBOX_FULL,
    MAILBOX_FULL_TEMPORARY,
    RELAY_DENIED,
    UNKNOWN_USER,
    UNSAFE_ADDRESS,
)
from tests.peers.postfix import user_python

MESSAGE = b"From: bob@elsewhere.test\r\nSubject: lda\r\n\r\nline one\r\n.line two\r\n"
STORED_BODY = b"From: bob@elsewhere.test\nSubject: lda\n\nline one\n.line two\n"


def lda_config(root: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hostname": "mx.example.test",
        "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}],
        "domains": ["example.test"],
        "storage": {"format": "maildir", "path": f"{root}/{{domain}}/{{user}}/Maildir", "create_folders": True},
        "users": {"alice@example.test": {}, "bob@example.test": {}, "full@example.test": {"quota": "1K"}},
    }
    config.update(overrides)
    return config


def run_lda(
    tmp_path: Path, config: dict[str, Any] | None, args: list[str], message: bytes
) -> subprocess.CompletedProcess[bytes]:
    config_path = tmp_path / "mda.yaml"
    if config is not None:
        config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "mda", "deliver", "--config", str(config_path), *args],
        input=message,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def messages(maildir: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((maildir / "new").iterdir())] if (maildir / "new").exists() else []


def test_delivers_with_trace_block_and_lf_endings(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    result = run_lda(tmp_path, lda_config(root), ["-f", "bob@elsewhere.test", "alice@example.test"], MESSAGE)
    assert result.returncode == EX_OK, result
    assert result.stdout.decode().startswith("2.0.0 alice@example.test: ")
    [stored] = messages(root / "example.test/alice/Maildir")
    lines = stored.split(b"\n")
    assert lines[0] == b"Return-Path: <bob@elsewhere.test>"
    assert lines[1] == b"Delivered-To: alice@example.test"
    assert lines[2] == b"Received: from localhost (localhost)"
    assert b"with local id" in lines[3]
    assert stored.endswith(STORED_BODY)
    assert b"\r" not in stored


def test_mta_trace_fields_and_from_line_are_replaced(tmp_path: Path) -> None:
    """Postfix local(8) writes From_, Return-Path, X-Original-To, Delivered-To first: not a loop."""
    root = tmp_path / "mail"
    prefix = (
        b"From bob@elsewhere.test  Sat Nov 28 12:00:00 2026\n"
        b"Return-Path: <bob@elsewhere.test>\nX-Original-To: alice@example.test\n"
        b"Delivered-To: alice@example.test\n"
    )
    result = run_lda(tmp_path, lda_config(root), ["-f", "bob@elsewhere.test", "alice@example.test"], prefix + MESSAGE)
    assert result.returncode == EX_OK, result
    [stored] = messages(root / "example.test/alice/Maildir")
    assert stored.count(b"Delivered-To:") == 1
    assert stored.count(b"Return-Path:") == 1
    assert not stored.startswith(b"From ")
    assert b"X-Original-To: alice@example.test\n" in stored


def test_delivered_to_below_the_top_is_a_loop(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    looped = b"Received: from a by b; Sat, 28 Nov 2026 12:00:00 +0000\r\nDelivered-To: alice@example.test\r\n" + MESSAGE
    result = run_lda(tmp_path, lda_config(root), ["alice@example.test"], looped)
    assert result.returncode == EX_DATAERR
    assert result.stdout.decode().startswith(f"{LOOP_DETECTED.enhanced} alice@example.test: ")


def test_null_sender_and_folder_address(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    result = run_lda(tmp_path, lda_config(root), ["-f", "", "alice+lists@example.test"], MESSAGE)
    assert result.returncode == EX_OK, result
    [stored] = messages(root / "example.test/alice/Maildir/.lists")
    assert stored.startswith(b"Return-Path: <>\n")
    assert (root / "example.test/alice/Maildir/.lists/maildirfolder").exists()


def test_duplicate_message_id_within_the_window_is_stored_once(tmp_path: Path) -> None:
    """LDA mode takes the server's delivery path, duplicate suppression included (``duplicate_window``):
    a second run with the same Message-ID for the same recipient exits 0 and stores nothing; another
    recipient, or another Message-ID, is still stored."""
    root = tmp_path / "mail"
    config = lda_config(root, duplicate_window="1h", state_dir=str(tmp_path / "state"))
    message = b"Message-ID: <once@elsewhere.test>\r\n" + MESSAGE
    first = run_lda(tmp_path, config, ["-f", "bob@elsewhere.test", "alice@example.test"], message)
    assert first.returncode == EX_OK, first
    again = run_lda(tmp_path, config, ["-f", "bob@elsewhere.test", "alice@example.test", "bob@example.test"], message)
    assert again.returncode == EX_OK, again
    assert again.stdout.decode().splitlines()[0].startswith("2.0.0 alice@example.test: ")
    assert len(messages(root / "example.test/alice/Maildir")) == 1
    assert len(messages(root / "example.test/bob/Maildir")) == 1
    other = b"Message-ID: <other@elsewhere.test>\r\n" + MESSAGE
    assert run_lda(tmp_path, config, ["alice@example.test"], other).returncode == EX_OK
    assert len(messages(root / "example.test/alice/Maildir")) == 2
    assert (tmp_path / "state/duplicates.sqlite").is_file()


def test_several_recipients_one_line_each_first_permanent_code(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    args = ["-f", "bob@elsewhere.test", "alice@example.test", "nobody@example.test", "bob@example.test"]
    result = run_lda(tmp_path, lda_config(root), args, MESSAGE)
    assert result.returncode == EX_NOUSER
    lines = result.stdout.decode().splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["2.0.0", "alice@example.test:"],
        ["5.1.1", "nobody@example.test:"],
        ["2.0.0", "bob@example.test:"],
    ]
    assert len(messages(root / "example.test/alice/Maildir")) == 1
    assert len(messages(root / "example.test/bob/Maildir")) == 1


def test_mailbox_full_is_5_2_2_and_cantcreat(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    big = MESSAGE + b"x" * 2000 + b"\r\n"
    result = run_lda(tmp_path, lda_config(root), ["full@example.test"], big)
    assert result.returncode == EX_CANTCREAT, result
    assert result.stdout.decode().startswith("5.2.2 full@example.test: ")


@pytest.mark.parametrize(
    "header",
    [
        b"".join(b"X-Filler-%04d: %s\r\n" % (n, b"y" * 40) for n in range(40)),  # many lines
        b"X-Long: " + b"z" * 3000 + b"\r\n",  # one line longer than the limit
        b"X-Unended: " + b"z" * 3000,  # a line that does not end before the limit
    ],
    ids=["many-lines", "long-line", "unended"],
)
def test_a_header_over_max_header_size_is_refused_as_the_server_refuses_it(tmp_path: Path, header: bytes) -> None:
    """``limits.max_header_size`` holds for ``mda deliver`` as for DATA: ``5.3.4``, exit 65 (EX_DATAERR,
    bad data: the MTA bounces it), nothing stored; the leading fields mda replaces do not count."""
    root = tmp_path / "mail"
    config = lda_config(root, limits={"max_header_size": "1K"})
    mta_trace = b"From bob@elsewhere.test  Sat Nov 28 12:00:00 2026\nReturn-Path: <bob@elsewhere.test>\n"
    result = run_lda(tmp_path, config, ["-f", "bob@elsewhere.test", "alice@example.test"], mta_trace + header + MESSAGE)
    assert result.returncode == EX_DATAERR, result
    assert result.stdout.decode() == f"{HEADER_TOO_BIG.enhanced} alice@example.test: {HEADER_TOO_BIG.text}\n"
    assert messages(root / "example.test/alice/Maildir") == []
    fits = b"".join(b"X-Filler-%04d: %s\r\n" % (n, b"y" * 40) for n in range(15))
    result = run_lda(tmp_path, config, ["-f", "bob@elsewhere.test", "alice@example.test"], mta_trace + fits + MESSAGE)
    assert result.returncode == EX_OK, result
    assert len(messages(root / "example.test/alice/Maildir")) == 1


def test_bad_configuration_is_a_temporary_failure(tmp_path: Path) -> None:
    result = run_lda(tmp_path, None, ["alice@example.test"], MESSAGE)
    assert result.returncode == EX_TEMPFAIL
    assert result.stdout.decode().startswith("4.3.5 alice@example.test: ")


@pytest.mark.root
def test_unwritable_mail_root_is_a_temporary_failure(public_dir: Path) -> None:
    """Run as an unprivileged user (as Postfix's mailbox_command does) against a root-owned tree: the
    configuration and the package are readable by that user, only the mail root is not writable."""
    root = public_dir / "mail"
    root.mkdir(mode=0o755)
    config = lda_config(root)
    (public_dir / "mda.yaml").write_text(yaml.safe_dump(config))
    (public_dir / "mda.yaml").chmod(0o644)
    python, extra_env = user_python(public_dir, "nobody")
    result = subprocess.run(
        [python, "-m", "mda", "deliver", "--config", str(public_dir / "mda.yaml"), "alice@example.test"],
        input=MESSAGE,
        capture_output=True,
        env={**os.environ, **extra_env},
        user="nobody",
        cwd="/",  # not the checkout: the package must come from PYTHONPATH
        timeout=30,
        check=False,
    )
    assert result.returncode == EX_TEMPFAIL, result
    assert result.stdout.decode().startswith("4."), result
    assert "Permission denied" in result.stderr.decode() or "ermission" in result.stdout.decode(), result


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (DELIVERED, EX_OK),
        (UNKNOWN_USER, EX_NOUSER),
        (RELAY_DENIED, EX_NOUSER),
        (UNSAFE_ADDRESS, EX_DATAERR),
        (MAILBOX_FULL, EX_CANTCREAT),
        (MAILBOX_FULL_TEMPORARY, EX_TEMPFAIL),
        (LOCAL_ERROR, EX_TEMPFAIL),
        (BARE_NEWLINE, EX_DATAERR),
        (LOOP_DETECTED, EX_DATAERR),
        (HEADER_TOO_BIG, EX_DATAERR),
    ],
)
def test_exit_code_table(reply: object, code: int) -> None:
    assert exit_code_for(reply) == code  # type: ignore[arg-type]


def test_combined_exit_code_prefers_tempfail_then_first_permanent() -> None:
    assert combined_exit_code([Status("a", UNKNOWN_USER), Status("b", LOCAL_ERROR)]) == EX_TEMPFAIL
    assert combined_exit_code([Status("a", DELIVERED), Status("b", MAILBOX_FULL), Status("c", UNKNOWN_USER)]) == (
        EX_CANTCREAT
    )
    assert combined_exit_code([Status("a", DELIVERED)]) == EX_OK
