"""Dovecot reads what mda wrote: IMAP and POP3 serve the same bytes, sizes and quota (private instance)."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from mda.storage.base import Mailbox, MessageCopy
from mda.storage.folders import folder_for_detail
from mda.storage.maildir import MaildirStore
from mda.storage.mbox import MboxStore
from mda.storage.quota import parse_maildirsize
from tests.peers.dovecot import Dovecot, DovecotSetup, DovecotUser

pytestmark = pytest.mark.root

ALICE, BOB = "alice@example.test", "bob@example.test"


def message(number: int, extra: bytes = b"") -> bytes:
    """A message with what stores must keep intact: 8-bit text, From lines, a leading dot, CRLF-free LF."""
    return (
        f"Message-ID: <m{number}@example.test>\nSubject: test {number}\n"
        "Content-Type: text/plain; charset=utf-8\n\n".encode()
        + "Grüße aus Köln\nFrom the start of a line\n>From already quoted\n.leading dot\n\nend\n".encode()
        + extra
    )


def message_id(data: bytes) -> str:
    found = re.search(rb"^Message-ID: (<[^>]+>)", data, re.MULTILINE | re.IGNORECASE)
    assert found is not None
    return found.group(1).decode()


def kib(size: int) -> int:
    """``doveadm quota get`` shows STORAGE in kibibytes rounded up (1,000,000 bytes show as 977)."""
    return -(-size // 1024)


def lf(data: bytes) -> bytes:
    """IMAP and POP3 send CRLF; the stores keep LF (RFC 3501 §2.2, RFC 1939 §3)."""
    return data.replace(b"\r\n", b"\n")


def mboxrd_quoted(data: bytes) -> bytes:
    """What Dovecot serves from an mbox: it keeps the mboxrd quoting ``>`` (mboxrd)."""
    return re.sub(rb"(?m)^(>*From )", rb">\1", data)


@dataclass
class Written:
    data: bytes
    vsize: int


def imap_fetch(dovecot: Dovecot, user: str, folder: str) -> dict[str, tuple[bytes, int]]:
    """{Message-ID: (message with LF, RFC822.SIZE)} for every message of ``folder``."""
    client = dovecot.imap(user)
    try:
        status, _ = client.select(f'"{folder}"', readonly=True)
        assert status == "OK", folder
        status, data = client.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
        assert status == "OK"
        found: dict[str, tuple[bytes, int]] = {}
        for item in data:
            if isinstance(item, tuple):
                size = re.search(rb"RFC822\.SIZE (\d+)", item[0])
                assert size is not None
                body = lf(item[1])
                found[message_id(body)] = (body, int(size.group(1)))
        return found
    finally:
        client.logout()


def pop3_fetch(dovecot: Dovecot, user: str) -> dict[str, bytes]:
    client = dovecot.pop3(user)
    try:
        count, _ = client.stat()
        found = {}
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            body = b"".join(line + b"\n" for line in lines)
            found[message_id(body)] = body
        return found
    finally:
        client.quit()


def test_dovecot_serves_maildir_and_mbox_byte_for_byte_with_matching_quota(
    dovecot_factory: DovecotSetup, make_copy: Callable[..., MessageCopy]
) -> None:
    setup = dovecot_factory
    alice_home = setup.mail_root / "example.test" / "alice"
    bob_home = setup.mail_root / "example.test" / "bob"
    inbox = Mailbox(
        format="maildir",
        path=alice_home / "Maildir",
        root=setup.mail_root,
        owner=setup.owner,
        quota_bytes=1_000_000,
        quota_messages=50,
    )
    folders = {"lists": folder_for_detail("lists"), "R&AOk-pertoire": folder_for_detail("Répertoire")}
    assert folders["R&AOk-pertoire"] == "R&AOk-pertoire"

    written: dict[str, dict[str, Written]] = {"INBOX": {}, **{name: {} for name in folders}}
    number = 0

    def deliver(folder: str, extra: bytes = b"", memory_limit: int | None = None) -> None:
        nonlocal number
        number += 1
        box = inbox if folder == "INBOX" else replace(inbox, folder=folders[folder], create_folder=True)
        copy = make_copy(message(number, extra), memory_limit=memory_limit)
        location = Path(MaildirStore().stage(box, copy).commit().location)
        data = location.read_bytes()  # before Dovecot moves it from new/ to cur/
        assert data == copy.header + copy.body.read_all()
        vsize = re.search(r",W=(\d+)", location.name)
        assert vsize is not None
        written[folder][message_id(data)] = Written(data, int(vsize.group(1)))

    deliver("INBOX")
    deliver("INBOX", extra=("long line " * 50 + "\n").encode() * 400, memory_limit=4096)
    deliver("lists")
    deliver("R&AOk-pertoire")

    mbox = Mailbox(format="mbox", path=bob_home / "mbox", root=setup.mail_root, owner=setup.owner)
    mbox_written = {}
    for extra in (b"", b"From inside the body\n>>From deep\n"):
        number += 1
        copy = make_copy(message(number, extra), sender="" if number % 2 else "sender@example.org")
        MboxStore().stage(mbox, copy).commit()
        data = copy.header + copy.body.read_all()
        mbox_written[message_id(data)] = data

    dovecot = setup.start([DovecotUser.maildir(ALICE, alice_home), DovecotUser.mbox(BOB, bob_home)])
    maildirsize_before = (inbox.path / "maildirsize").read_bytes()

    listed = dovecot.imap(ALICE)
    try:
        _, names = listed.list()
    finally:
        listed.logout()
    assert {line.decode().rsplit(" ", 1)[1].strip('"') for line in names} == {"INBOX", *folders}

    for folder, expected in written.items():
        served = imap_fetch(dovecot, ALICE, folder)
        assert set(served) == set(expected), folder
        for key, copy in expected.items():
            assert served[key][0] == copy.data, f"{folder} {key}: IMAP body differs"
            assert served[key][1] == copy.vsize == len(copy.data) + copy.data.count(b"\n"), "RFC822.SIZE vs W="
    assert pop3_fetch(dovecot, ALICE) == {key: copy.data for key, copy in written["INBOX"].items()}

    served_mbox = imap_fetch(dovecot, BOB, "INBOX")
    assert set(served_mbox) == set(mbox_written)
    for key, data in mbox_written.items():
        assert served_mbox[key][0] == mboxrd_quoted(data)
        assert served_mbox[key][1] == len(mboxrd_quoted(data)) + data.count(b"\n")
    assert pop3_fetch(dovecot, BOB) == {key: mboxrd_quoted(data) for key, data in mbox_written.items()}

    parsed = parse_maildirsize((inbox.path / "maildirsize").read_bytes())
    assert parsed is not None
    total = sum(len(copy.data) for copies in written.values() for copy in copies.values())
    assert (parsed.usage.bytes, parsed.usage.messages) == (total, number - 2)
    assert dovecot.quota(ALICE) == {
        "STORAGE": (kib(total), kib(1_000_000)),
        "MESSAGE": (number - 2, 50),
    }
    assert (inbox.path / "maildirsize").read_bytes() == maildirsize_before, "Dovecot had to rebuild it"

    deliver("INBOX")  # mda's delta after Dovecot has read the file: Dovecot counts it too
    total += len(list(written["INBOX"].values())[-1].data)
    assert dovecot.quota(ALICE)["MESSAGE"] == (number - 2, 50)
    assert dovecot.quota(ALICE)["STORAGE"] == (kib(total), kib(1_000_000))


def test_lmtp_session_delivers_what_dovecot_serves(
    dovecot_factory: DovecotSetup, start_mda: Callable[..., Any]
) -> None:
    """Through a real ``mda serve``: one LMTP transaction per recipient, then IMAP, POP3 and doveadm."""
    setup = dovecot_factory
    root = setup.mail_root
    server = start_mda(
        {
            "hostname": "mx.example.test",
            "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "smtp", "bind": "127.0.0.1:0"}],
            "domains": ["example.test"],
            "storage": {
                "format": "maildir",
                "path": f"{root}/{{domain}}/{{user}}/Maildir",
                "owner": "vmail",
                "create_folders": True,
                "quota": "1M",
                "quota_messages": 100,
            },
            "users": {ALICE: {}, BOB: {"format": "mbox", "path": f"{root}/{{domain}}/{{user}}/mbox"}},
        }
    )
    sent = {}
    with smtplib.LMTP(*server.lmtp) as client:
        for number, recipient in enumerate((ALICE, "alice+lists@example.test", BOB, BOB), start=1):
            data = message(number)
            refused = client.sendmail("sender@example.org", [recipient], data.replace(b"\n", b"\r\n"))
            assert refused == {}
            sent[message_id(data)] = data

    alice_maildir = root / "example.test" / "alice" / "Maildir"
    stored = {  # read before Dovecot moves the files from new/ to cur/
        folder: {
            message_id(path.read_bytes()): (path.name, path.read_bytes())
            for path in (alice_maildir / sub / "new").iterdir()
        }
        for folder, sub in (("INBOX", "."), ("lists", ".lists"))
    }
    dovecot = setup.start(
        [DovecotUser.maildir(ALICE, alice_maildir.parent), DovecotUser.mbox(BOB, root / "example.test" / "bob")]
    )
    for folder, files in stored.items():
        served = imap_fetch(dovecot, ALICE, folder)
        assert set(served) == set(files)
        for key, (name, data) in files.items():
            assert served[key][0] == data and data.endswith(sent[key]), "trace headers, then the message as sent"
            assert f",W={served[key][1]}" in name
    served_mbox = imap_fetch(dovecot, BOB, "INBOX")
    assert set(served_mbox) == {"<m3@example.test>", "<m4@example.test>"}
    for key, (body, _size) in served_mbox.items():
        assert body.endswith(mboxrd_quoted(sent[key]))
    assert pop3_fetch(dovecot, BOB) == {key: body for key, (body, _size) in served_mbox.items()}

    parsed = parse_maildirsize((alice_maildir / "maildirsize").read_bytes())
    assert parsed is not None and parsed.usage.messages == 2
    assert dovecot.quota(ALICE) == {
        "STORAGE": (kib(parsed.usage.bytes), kib(1024 * 1024)),
        "MESSAGE": (2, 100),
    }
