"""Maildir++ quota: ``maildirsize`` exactly as Dovecot writes it, its rebuild rules, and the replies."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mda.replies import MAILBOX_FULL, MAILBOX_FULL_TEMPORARY, DeliveryError, Reply
from mda.storage.base import Mailbox, MessageCopy
from mda.storage.maildir import MaildirStore
from mda.storage.mbox import MboxStore
from mda.storage.quota import (
    REBUILD_SIZE,
    STALE_SECONDS,
    QuotaLimit,
    Usage,
    check_quota_before_data,
    message_size,
    parse_maildirsize,
)
from tests.storage.helpers import maildir_box, mbox_box

BODY = b"Subject: q\n\n" + b"q" * 88 + b"\n"  # with the default header: 137 bytes


def size_file(box: Mailbox) -> Path:
    return box.path / "maildirsize"


def messages_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.mark.parametrize(
    ("limit", "line"),
    [
        (QuotaLimit(1000, 10), "1000S,10C"),
        (QuotaLimit(1000, 0), "1000S"),
        (QuotaLimit(0, 10), "10C"),
        (QuotaLimit(0, 0), "0S"),  # Dovecot: "if we have no limits, write 0S instead of an empty line"
    ],
)
def test_limit_line_as_dovecot_writes_it(limit: QuotaLimit, line: str) -> None:
    assert limit.header() == line
    assert QuotaLimit.parse(line) == limit


def test_parse_sums_deltas_and_ignores_an_unfinished_last_line() -> None:
    parsed = parse_maildirsize(b"1000S,10C\n300 3\n100 1\n-50 -1\n999 9")
    assert parsed is not None
    assert (parsed.limit, parsed.usage, parsed.usage_lines) == (QuotaLimit(1000, 10), Usage(350, 3), 3)


@pytest.mark.parametrize(
    "content", [b"", b"1000S\n", b"junk\n0 0\n", b"1000S\n1 x\n", b"1000S\n5 1\n-9 -1\n", b"1000S\n0\x00 0\n"]
)
def test_corrupt_files_need_a_rebuild(content: bytes) -> None:
    assert parse_maildirsize(content) is None


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("1700000000.M1P2Q3.host,S=42,W=44", 42),
        ("1700000000.M1P2Q3.host,S=42,W=44:2,S", 42),
        ("1700000000.M1P2Q3.host,S=42:2,", 42),
        ("1700000000.M1P2Q3.host", None),
        ("1700000000.M1P2Q3.host,S=4x", None),
    ],
)
def test_size_from_maildir_name(name: str, size: int | None) -> None:
    assert message_size(name) == size


def test_first_delivery_creates_the_file_then_appends_one_delta(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root, quota_bytes=10_000, quota_messages=10)
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"10000S,10C\n0 0\n{copy.size} 1\n".encode()
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"10000S,10C\n0 0\n{copy.size} 1\n{copy.size} 1\n".encode()


def test_folder_delivery_counts_towards_the_maildir_root(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root, quota_bytes=10_000, folder="lists", create_folder=True)
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"10000S\n0 0\n{copy.size} 1\n".encode()
    assert not (box.path / ".lists" / "maildirsize").exists()


def test_abort_appends_nothing(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root, quota_bytes=10_000)
    MaildirStore().stage(box, make_copy(BODY)).abort()
    assert size_file(box).read_bytes() == b"10000S\n0 0\n"


def test_rebuild_scans_inbox_and_folders_by_s_or_stat(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root)
    store = MaildirStore()
    copy = make_copy(BODY)
    store.stage(box, copy).commit()
    store.stage(replace(box, folder="a", create_folder=True), copy).commit()
    (box.path / "cur" / "1700000000.M1P1Q1.other:2,S").write_bytes(b"x" * 77)  # no S=: stat() it
    (box.path / "tmp" / "1700000000.M1P1Q2.other,S=5000").write_bytes(b"")  # tmp/ never counts
    limited = replace(box, quota_bytes=100_000)
    store.stage(limited, copy).commit()
    assert size_file(box).read_bytes() == f"100000S\n{2 * copy.size + 77} 3\n{copy.size} 1\n".encode()


def test_rebuilt_when_too_large(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root, quota_bytes=10_000)
    box.path.mkdir(parents=True)
    size_file(box).write_bytes(b"10000S\n0 0\n" + b"1 0\n" * (REBUILD_SIZE // 4))
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"10000S\n0 0\n{copy.size} 1\n".encode()


def test_rebuilt_when_the_limit_changed(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root, quota_bytes=10_000)
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    raised = replace(box, quota_bytes=20_000, quota_messages=5)
    MaildirStore().stage(raised, copy).commit()
    assert size_file(box).read_bytes() == f"20000S,5C\n{copy.size} 1\n{copy.size} 1\n".encode()


def test_over_limit_with_deltas_is_recounted_before_refusing(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    """Deltas may be wrong (lost or doubled appends): over the limit they are not trusted."""
    box = maildir_box(mail_root, quota_bytes=1000)
    box.path.mkdir(parents=True)
    size_file(box).write_bytes(b"1000S\n0 0\n900 1\n")
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"1000S\n0 0\n{copy.size} 1\n".encode()


def test_over_limit_fresh_summary_is_trusted_stale_one_recounted(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root, quota_bytes=1000)
    box.path.mkdir(parents=True)
    size_file(box).write_bytes(b"1000S\n950 1\n")
    with pytest.raises(DeliveryError) as raised:
        MaildirStore().stage(box, make_copy(BODY))
    assert raised.value.reply == MAILBOX_FULL
    old = time.time() - STALE_SECONDS - 60
    os.utime(size_file(box), (old, old))
    MaildirStore().stage(box, make_copy(BODY)).commit()
    assert size_file(box).read_bytes().startswith(b"1000S\n0 0\n")


@pytest.mark.parametrize(("tempfail", "reply"), [(False, MAILBOX_FULL), (True, MAILBOX_FULL_TEMPORARY)])
def test_over_quota_refuses_and_writes_nothing(
    mail_root: Path, make_copy: Callable[..., MessageCopy], tempfail: bool, reply: Reply
) -> None:
    box = maildir_box(mail_root, quota_bytes=200, quota_full_tempfail=tempfail)
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    with pytest.raises(DeliveryError) as raised:
        MaildirStore().stage(box, copy)
    assert raised.value.reply == reply
    assert (str(reply)[:9]) == ("452 4.2.2" if tempfail else "552 5.2.2")
    assert len(messages_in(box.path / "new")) == 1
    assert messages_in(box.path / "tmp") == []
    # Over the limit the deltas were recounted before refusing: one summary line, nothing charged.
    assert size_file(box).read_bytes() == f"200S\n{copy.size} 1\n".encode()


def test_message_count_limit(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root, quota_messages=2)
    for _ in range(2):
        MaildirStore().stage(box, make_copy(BODY)).commit()
    with pytest.raises(DeliveryError) as raised:
        MaildirStore().stage(box, make_copy(BODY))
    assert raised.value.reply == MAILBOX_FULL


def test_no_quota_configured_still_keeps_an_existing_file_counting(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root)
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert not size_file(box).exists(), "without a quota mda creates no maildirsize"
    size_file(box).write_bytes(b"0S\n0 0\n")
    MaildirStore().stage(box, copy).commit()
    assert size_file(box).read_bytes() == f"0S\n0 0\n{copy.size} 1\n".encode()


def test_check_before_data_uses_size_parameter(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root, quota_bytes=1000)
    assert check_quota_before_data(box, 1000) is None, "a Maildir that does not exist yet is empty"
    assert check_quota_before_data(box, 1001) == MAILBOX_FULL
    copy = make_copy(BODY)
    MaildirStore().stage(box, copy).commit()
    assert check_quota_before_data(box, 1000 - copy.size) is None
    assert check_quota_before_data(box, 1001 - copy.size) == MAILBOX_FULL
    assert check_quota_before_data(box, None) is None
    full = replace(box, quota_bytes=copy.size, quota_full_tempfail=True)
    assert check_quota_before_data(full, None) == MAILBOX_FULL_TEMPORARY
    assert check_quota_before_data(maildir_box(mail_root), 10**12) is None


def test_check_before_data_for_mbox(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = mbox_box(mail_root, quota_bytes=500)
    assert check_quota_before_data(box, 500) is None
    MboxStore().stage(box, make_copy(BODY)).commit()
    used = box.path.stat().st_size
    assert check_quota_before_data(box, 500 - used) is None
    assert check_quota_before_data(box, 501 - used) == MAILBOX_FULL


def test_check_before_data_does_not_follow_a_planted_symlink(mail_root: Path, tmp_path: Path) -> None:
    """A symlink as the Maildir is never followed at RCPT: the full ``maildirsize`` where it points is not
    read (nor rebuilt), and the mailbox is judged as a missing one; delivery refuses it later."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "maildirsize").write_bytes(b"1000S\n1000 1\n")
    box = maildir_box(mail_root, quota_bytes=1000)
    box.path.parent.mkdir(parents=True)
    box.path.symlink_to(outside)
    assert check_quota_before_data(box, 10) is None
    assert os.listdir(outside) == ["maildirsize"]
    assert (outside / "maildirsize").read_bytes() == b"1000S\n1000 1\n"
