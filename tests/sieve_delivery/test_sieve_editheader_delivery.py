"""editheader (RFC 5293) at delivery: the stored copy and the redirect carry the edited header section,
the body is stored byte for byte as received, other recipients keep the message as it came."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

from tests.mdaproc import RunningServer
from tests.sieve_delivery.conftest import Sink
from tests.sieve_delivery.test_sieve_delivery import ALICE, BOB, SENDER, deliver, maildir, serve, stored, write_script

EDIT_SCRIPT = """require ["editheader", "fileinto", "mailbox", "copy"];
deleteheader "X-Spam-Flag";
deleteheader "Received";
deleteheader "Delivered-To";
addheader "X-Filtered" "by sieve";
addheader :last "X-Trail" "last field";
if not exists "X-Spam-Flag" { fileinto :create "Edited"; }
redirect :copy "copy@example.org";
"""


def edited_message(body: bytes) -> bytes:
    head = (
        b"Received: from relay.example.org by mx.example.test; Sat, 28 Nov 2026 12:00:00 +0000\n"
        b"From: <sender@example.org>\nTo: <alice@example.test>\nSubject: edit me\n"
        b"X-Spam-Flag: YES\nMessage-ID: <edit@example.org>\n"
    )
    return head + b"\n" + body


def split(stored_bytes: bytes) -> tuple[bytes, bytes]:
    head, _, body = stored_bytes.partition(b"\n\n")
    return head + b"\n", body


def check_edited(head: bytes) -> None:
    fields = head.splitlines()
    assert fields[0] == b"X-Filtered: by sieve" and fields[-1] == b"X-Trail: last field", head
    assert b"X-Spam-Flag" not in head
    # Protected: mda's trace fields and every Received stay.
    assert b"Return-Path: <sender@example.org>" in head and b"Delivered-To: alice@example.test" in head
    assert head.count(b"Received:") == 2


def test_stored_copy_and_redirect_carry_the_edited_header_body_unchanged(
    tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    root = tmp_path / "mail"
    write_script(root, EDIT_SCRIPT)
    server = serve(start_mda, root, submission={"host": "127.0.0.1", "port": smtp_sink.port})
    # Trailing spaces, a line that looks like the deleted field, a "From " line, empty lines: as sent.
    body = b"First line  \nX-Spam-Flag: YES\nFrom the body\n\n\nlast line\n"
    assert [r.code for r in deliver(server, [ALICE, BOB], edited_message(body))] == [250, 250]

    (copy,) = stored(maildir(root) / ".Edited")
    head, stored_body = split(copy.read_bytes())
    check_edited(head)
    assert stored_body == body
    assert stored(maildir(root)) == []
    # The other recipient has no script: the message as received, with its own trace fields.
    (plain,) = stored(maildir(root, "bob"))
    assert b"X-Spam-Flag: YES" in plain.read_bytes() and b"X-Filtered" not in plain.read_bytes()
    assert split(plain.read_bytes())[1] == body

    (sent,) = smtp_sink.wait(1)
    sent_head, sent_body = split(sent.content.replace(b"\r\n", b"\n"))
    check_edited(sent_head)
    assert sent_body == body


def test_large_message_is_edited_without_rewriting_its_body(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """Over the size Sieve reads whole (1 MiB) the spool is on disk and the script sees the header only:
    the edits still apply, and the multi-megabyte body is copied from the spool unchanged (SMTP path)."""
    root = tmp_path / "mail"
    write_script(root, 'require "editheader";\ndeleteheader "X-Spam-Flag";\naddheader "X-Big" "yes";\n')
    server = serve(start_mda, root)
    body = b"".join(b"line %07d of a large body\n" % i for i in range(120_000))
    with smtplib.SMTP(*server.smtp) as client:
        client.sendmail(SENDER, [ALICE], edited_message(body).replace(b"\n", b"\r\n"))
    (copy,) = stored(maildir(root))
    head, stored_body = split(copy.read_bytes())
    assert head.startswith(b"X-Big: yes\n") and b"X-Spam-Flag" not in head
    assert stored_body == body
    size = int(copy.name.split(",S=")[1].split(",")[0])
    assert size == copy.stat().st_size


def test_hostile_edits_never_lose_the_message(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """A field name built from a variable that is not one, and a field too large, are runtime errors:
    the message is kept unedited, as after any runtime error."""
    root = tmp_path / "mail"
    script = """require ["editheader", "variables"];
set "name" "Bad Name:";
if header :is "subject" "bad name" { addheader "${name}" "x"; }
"""
    write_script(root, script + 'if header :is "subject" "too big" { addheader "X-Big" "' + "y" * 3000 + '"; }\n')
    server = serve(start_mda, root)
    for subject in ("bad name", "too big"):
        data = edited_message(b"body\n").replace(b"Subject: edit me", b"Subject: " + subject.encode())
        assert [r.code for r in deliver(server, [ALICE], data)] == [250]
    copies = stored(maildir(root))
    assert len(copies) == 2
    for copy in copies:
        assert b"X-Spam-Flag: YES" in copy.read_bytes() and b"X-Big" not in copy.read_bytes()
    assert "addheader" in server.wait_for_log("field larger than")


def test_mbox_copy_carries_the_edited_header(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """The mbox store writes the edited header section and the unchanged, mboxrd-quoted body."""
    root = tmp_path / "mail"
    write_script(root, 'require "editheader";\ndeleteheader "X-Spam-Flag";\naddheader :last "X-Mbox" "yes";\n')
    storage = {"format": "mbox", "path": f"{root}/{{domain}}/{{user}}/mbox", "fsync": True}
    server = serve(start_mda, root, storage=storage)
    body = b"First line\nFrom the body\n"
    assert [r.code for r in deliver(server, [ALICE], edited_message(body))] == [250]
    stored_bytes = (root / "example.test" / "alice" / "mbox").read_bytes()
    head, _, rest = stored_bytes.partition(b"\n\n")
    assert head.startswith(b"From sender@example.org ") and head.endswith(b"\nX-Mbox: yes")
    assert b"X-Spam-Flag" not in head
    assert rest == b"First line\n>From the body\n\n"
