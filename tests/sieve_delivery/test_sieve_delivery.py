"""Sieve at delivery through a real ``mda serve``: folders, flags, discard, reject, redirect, vacation, errors.

Every test talks LMTP (or SMTP) over a real socket to a real server process; redirects and vacation replies
go to a real SMTP sink configured as ``submission``.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mda.addresses import parse_mailbox
from mda.config import load
from mda.filtering import check_scripts, explain
from mda.policy import Policy
from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.peers.dovecot import DovecotSetup, DovecotUser, free_port
from tests.sieve_delivery.conftest import Sink

ALICE, BOB = "alice@example.test", "bob@example.test"
SENDER = "sender@example.org"
DELIVERED, REJECTED = 250, 550

FILING_SCRIPT = r"""require ["fileinto", "imap4flags", "mailbox"];
if header :contains "subject" "flagme" {
  addflag "\\Seen";
  addflag "\\Flagged";
} elsif header :contains "subject" "lists" {
  fileinto :create "Lists.python";
} elsif header :contains "subject" "nofolder" {
  fileinto "Missing";
} elsif header :contains "subject" "drop" {
  discard;
}
"""

REJECT_SCRIPT = """require "reject";
reject text:
Go away,
I am not here.
.
;
"""

VACATION_SCRIPT = """require "vacation";
vacation :days 1 :subject "Away" "I am away until Monday.";
"""

BROKEN_SCRIPT = """require "fileinto";
if header :contains "subject" "x" {
  fileinto "A"
}
"""


def message(subject: str, *, to: str = ALICE, sender: str = SENDER, number: int = 1) -> bytes:
    return (
        f"From: <{sender}>\nTo: <{to}>\nSubject: {subject}\nMessage-ID: <m{number}.{subject}@example.org>\n\n"
        f"Body of {subject}.\n"
    ).encode()


def maildir(root: Path, user: str = "alice") -> Path:
    return root / "example.test" / user / "Maildir"


def stored(directory: Path) -> list[Path]:
    """Message files in a Maildir (or folder): ``new/`` and ``cur/``."""
    return sorted(p for sub in ("new", "cur") if (directory / sub).is_dir() for p in (directory / sub).iterdir())


def write_script(root: Path, text: str, user: str = "alice") -> Path:
    """The user's active script where ``sieve.path: "{home}/active.sieve"`` finds it."""
    path = root / "example.test" / user / "active.sieve"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def serve(start_mda: Callable[..., RunningServer], root: Path, **overrides: Any) -> RunningServer:
    config = basic_config(root, sieve={"path": "{home}/active.sieve"}, state_dir=str(root / "state"))
    config.update(overrides)
    return start_mda(config)


def deliver(server: RunningServer, recipients: list[str], data: bytes, sender: str = SENDER) -> list[Any]:
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.example.org")
        rcpt, replies = transaction(client, sender, recipients, data)
        assert all(r.code == 250 for r in rcpt), rcpt
        return replies


def test_keep_flags_fileinto_and_discard(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """imap4flags land in cur/ with ``:2,FS``; fileinto :create makes the Maildir++ folder; a missing
    folder without :create falls back to INBOX (as Pigeonhole does); discard stores nothing, answers 250."""
    root = tmp_path / "mail"
    write_script(root, FILING_SCRIPT)
    server = serve(start_mda, root)

    assert [r.code for r in deliver(server, [ALICE], message("flagme"))] == [DELIVERED]
    flagged = stored(maildir(root))
    assert len(flagged) == 1 and flagged[0].parent.name == "cur" and flagged[0].name.endswith(":2,FS")

    assert [r.code for r in deliver(server, [ALICE], message("lists"))] == [DELIVERED]
    folder = maildir(root) / ".Lists.python"
    assert (folder / "maildirfolder").is_file()
    assert len(stored(folder)) == 1 and b"Subject: lists" in stored(folder)[0].read_bytes()

    assert [r.code for r in deliver(server, [ALICE], message("nofolder"))] == [DELIVERED]
    assert not (maildir(root) / ".Missing").exists()
    assert len(stored(maildir(root))) == 2

    replies = deliver(server, [ALICE], message("drop"))
    assert [r.code for r in replies] == [DELIVERED]
    assert len(stored(maildir(root))) == 2 and len(stored(folder)) == 1
    assert "sieve: discard" in server.wait_for_log("sieve: discard")


def test_reject_refuses_only_that_recipient(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """RFC 5429: in LMTP the rejecting recipient gets ``550 5.7.1 reason`` (one line), the other 250. The
    script comes from a per-user ``sieve:`` setting, without a global ``sieve:`` section. In SMTP the
    single reply is the reject (SMTP commits every copy or none: docs/architecture.md)."""
    root = tmp_path / "mail"
    script = tmp_path / "reject.sieve"
    script.write_text(REJECT_SCRIPT)
    config = basic_config(root)
    config["users"][ALICE] = {"sieve": str(script)}
    server = start_mda(config)

    replies = deliver(server, [ALICE, BOB], message("hello", to=f"{ALICE}, {BOB}"))
    assert [r.code for r in replies] == [REJECTED, DELIVERED]
    assert replies[0].enhanced == "5.7.1"
    assert "Go away, I am not here." in replies[0].text
    assert stored(maildir(root)) == [] and len(stored(maildir(root, "bob"))) == 1

    with smtplib.SMTP(*server.smtp) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(SENDER, [ALICE], message("again").replace(b"\n", b"\r\n"))
    assert refused.value.smtp_code == REJECTED
    assert stored(maildir(root)) == []


def test_vacation_answers_once_per_sender_per_period(
    tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    """RFC 5230 §4.2: one reply per sender per period, sent with ``MAIL FROM:<>`` (RFC 3834 §3.3); every
    message is still stored."""
    root = tmp_path / "mail"
    write_script(root, VACATION_SCRIPT)
    server = serve(start_mda, root, submission={"host": "127.0.0.1", "port": smtp_sink.port})
    first, second = "one@example.org", "two@example.org"
    for number, sender in enumerate((first, first, second, first), start=1):
        replies = deliver(server, [ALICE], message("hello", sender=sender, number=number), sender=sender)
        assert [r.code for r in replies] == [DELIVERED]
    sent = smtp_sink.wait(2)
    assert [(m.sender, m.recipients) for m in sent] == [("<>", (first,)), ("<>", (second,))]
    assert b"Subject: Away" in sent[0].content and b"Auto-Submitted: auto-replied" in sent[0].content
    assert b"In-Reply-To: <m1.hello@example.org>" in sent[0].content
    assert len(stored(maildir(root))) == 4
    assert (root / "state" / "vacation.sqlite").is_file()


def test_redirect_reaches_submission_and_falls_back_to_inbox(
    tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    """A redirect goes out from the original sender with the trace headers, and nothing stays here; when
    the submission server is down the message is kept in INBOX instead, never lost."""
    root = tmp_path / "mail"
    write_script(root, 'redirect "elsewhere@example.org";\n')
    server = serve(start_mda, root, submission={"host": "127.0.0.1", "port": smtp_sink.port})
    assert [r.code for r in deliver(server, [ALICE], message("forward me"))] == [DELIVERED]
    sent = smtp_sink.wait(1)
    assert [(m.sender, m.recipients) for m in sent] == [(SENDER, ("elsewhere@example.org",))]
    assert b"Delivered-To: alice@example.test" in sent[0].content and b"Subject: forward me" in sent[0].content
    assert stored(maildir(root)) == []

    down = serve(start_mda, tmp_path / "mail2", submission={"host": "127.0.0.1", "port": free_port()})
    write_script(tmp_path / "mail2", 'redirect "elsewhere@example.org";\n')
    assert [r.code for r in deliver(down, [ALICE], message("forward me"))] == [DELIVERED]
    assert len(stored(maildir(tmp_path / "mail2"))) == 1
    assert "kind=redirect" in down.wait_for_log("kind=redirect") and "sieve_error" in down.log()


def _metrics_url(server: RunningServer) -> str:
    line = next(line for line in server.lines if line.startswith("metrics "))
    return line.split(" ", 1)[1]


def test_broken_script_still_delivers_and_is_counted(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """A script that does not compile never loses mail: INBOX, a log line with file and line, a counter."""
    root = tmp_path / "mail"
    script = write_script(root, BROKEN_SCRIPT)
    server = serve(start_mda, root, metrics={"bind": "127.0.0.1:0"})
    assert [r.code for r in deliver(server, [ALICE], message("x"))] == [DELIVERED]
    assert len(stored(maildir(root))) == 1
    log_lines = [line for line in server.wait_for_log("sieve_error").splitlines() if "sieve_error" in line]
    assert log_lines and all(part in log_lines[0] for part in (f"file={script}", "line=4", "kind=compile"))
    with urllib.request.urlopen(_metrics_url(server), timeout=10) as response:
        exposition = response.read().decode()
    assert 'mda_sieve_errors_total{kind="compile"} 1.0' in exposition


def _mda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mda", *args], capture_output=True, text=True, timeout=60, check=False)


def test_sieve_check_and_resolve_message(tmp_path: Path) -> None:
    """``mda sieve-check`` reports ``FILE:LINE: message`` (exit 1) or ok (exit 0); ``mda resolve --message``
    shows what the script would do with a message."""
    root = tmp_path / "mail"
    config_path = tmp_path / "mda.yaml"
    config_path.write_text(yaml.safe_dump(basic_config(root, sieve={"path": "{home}/active.sieve"})))
    script = write_script(root, BROKEN_SCRIPT)
    broken = _mda("sieve-check", "--config", str(config_path), ALICE)
    assert broken.returncode == 1 and broken.stdout.startswith(f"{script}:4: "), broken
    write_script(root, FILING_SCRIPT)
    good = _mda("sieve-check", "--config", str(config_path), ALICE)
    assert good.returncode == 0 and good.stdout.strip() == f"{script}: ok"
    assert _mda("sieve-check", "--config", str(config_path), "not an address").returncode == 2
    assert _mda("sieve-check", "--config", str(config_path), "nobody@example.test").returncode == 2

    mail = tmp_path / "message.eml"
    mail.write_bytes(message("lists"))
    resolved = _mda("resolve", "--config", str(config_path), ALICE, "--message", str(mail))
    assert resolved.returncode == 0, resolved
    assert "sieve: fileinto 'Lists.python'" in resolved.stdout
    assert "folder .Lists.python" in resolved.stdout and not (maildir(root) / ".Lists.python").exists()


@pytest.mark.root
def test_fileinto_folder_and_flags_as_dovecot_serves_them(
    dovecot_factory: DovecotSetup, start_mda: Callable[..., RunningServer]
) -> None:
    """What Dovecot's IMAP lists and fetches: the folder ``fileinto`` created, and the ``\\Seen`` flag."""
    setup = dovecot_factory
    root = setup.mail_root
    write_script(root, FILING_SCRIPT)
    config = basic_config(root, sieve={"path": "{home}/active.sieve"})
    config["storage"]["owner"] = "vmail"
    server = start_mda(config)
    assert [r.code for r in deliver(server, [ALICE], message("lists", number=1))] == [DELIVERED]
    assert [r.code for r in deliver(server, [ALICE], message("flagme", number=2))] == [DELIVERED]

    dovecot = setup.start([DovecotUser.maildir(ALICE, maildir(root).parent)])
    imap = dovecot.imap(ALICE)
    try:
        status, listed = imap.list()
        assert status == "OK"
        names = {line.decode().rsplit(" ", 1)[1].strip('"') for line in listed if line}
        assert "Lists.python" in names, listed
        status, count = imap.select('"Lists.python"', readonly=True)
        assert status == "OK" and count == [b"1"]
        status, count = imap.select("INBOX", readonly=True)
        assert status == "OK" and count == [b"1"]
        status, fetched = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK"
        flags_line = fetched[0][0].decode()
        assert "\\Seen" in flags_line and "\\Flagged" in flags_line
        assert b"flagme" in fetched[0][1]
    finally:
        imap.logout()


def test_only_script_files_that_exist_run(tmp_path: Path) -> None:
    """A missing file, a directory or a dangling link where a script may be is no script; the rest run."""
    root = tmp_path / "mail"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "folder.sieve").mkdir()
    (scripts / "dangling.sieve").symlink_to(scripts / "gone")
    present = scripts / "before.sieve"
    present.write_text('require "imap4flags";\naddflag "\\\\Flagged";\n')
    before = [str(scripts / name) for name in ("missing.sieve", "folder.sieve", "dangling.sieve", "before.sieve")]
    config_path = tmp_path / "mda.yaml"
    config_path.write_text(yaml.safe_dump(basic_config(root, sieve={"path": "{home}/active.sieve", "before": before})))
    (root / "example.test" / "alice" / "active.sieve").mkdir(parents=True)
    config = load(config_path)
    mailboxes = Policy(config).resolve(parse_mailbox(ALICE), smtputf8=True).mailboxes
    assert check_scripts(config, mailboxes) == [(present, None)]
    assert explain(config, ALICE, mailboxes, message("flags"), SENDER) == [
        "sieve: keep flags \\Flagged",
        f"sieve: store maildir {root / 'example.test' / 'alice' / 'Maildir'} (INBOX) flags :2,F",
    ]
