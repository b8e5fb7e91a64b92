"""Failure safety: planted symlinks, a full disk (real tmpfs), all-or-nothing staging, ownership."""

from __future__ import annotations

import errno
import mailbox
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mda.replies import DISK_FULL, LOCAL_ERROR, reply_for_error
from mda.storage.base import MessageCopy
from mda.storage.maildir import MaildirStore
from mda.storage.mbox import MboxStore
from mda.storage.quota import scan_usage
from tests.peers.dovecot import ensure_system_user
from tests.storage.helpers import maildir_box, mbox_box

BODY = b"Subject: safe\n\nbody\n"


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where a planted symlink points: nothing may ever appear here."""
    target = tmp_path / "outside"
    target.mkdir()
    return target


def test_symlink_as_the_maildir_is_not_followed(
    mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root)
    box.path.parent.mkdir(parents=True)
    box.path.symlink_to(outside)
    with pytest.raises(OSError) as raised:
        MaildirStore().stage(box, make_copy(BODY))
    assert reply_for_error(raised.value) == LOCAL_ERROR
    assert entries(outside) == []


def test_symlink_above_the_maildir_is_not_followed(
    mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    (mail_root / "example.test").symlink_to(outside)
    with pytest.raises(OSError):
        MaildirStore().stage(maildir_box(mail_root), make_copy(BODY))
    assert entries(outside) == []


def test_symlink_as_new_is_not_followed(mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(mail_root)
    MaildirStore().stage(box, make_copy(BODY)).abort()  # creates the Maildir
    (box.path / "new").rmdir()
    (box.path / "new").symlink_to(outside)
    with pytest.raises(OSError):
        MaildirStore().stage(box, make_copy(BODY)).commit()
    assert entries(outside) == []
    assert entries(box.path / "tmp") == []


def test_symlink_as_a_folder_is_not_followed(
    mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = maildir_box(mail_root, folder="lists", create_folder=True)
    MaildirStore().stage(maildir_box(mail_root), make_copy(BODY)).commit()
    (box.path / ".lists").symlink_to(outside)
    with pytest.raises(OSError):
        MaildirStore().stage(box, make_copy(BODY))
    assert entries(outside) == []
    maildir_fd = os.open(box.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert scan_usage(maildir_fd).messages == 1, "the planted folder is not counted either"
    finally:
        os.close(maildir_fd)


def test_symlink_as_the_mbox_is_not_followed(
    mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = mbox_box(mail_root)
    victim = outside / "victim"
    victim.write_bytes(b"precious\n")
    box.path.parent.mkdir(parents=True)
    box.path.symlink_to(victim)
    with pytest.raises(OSError) as raised:
        MboxStore().stage(box, make_copy(BODY))
    assert raised.value.errno == errno.ELOOP
    assert reply_for_error(raised.value) == LOCAL_ERROR
    assert victim.read_bytes() == b"precious\n"
    assert entries(box.path.parent) == ["mbox"], "no dot-lock was left behind"


def test_mbox_hard_link_and_fifo_are_refused(
    mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    box = mbox_box(mail_root)
    box.path.parent.mkdir(parents=True)
    victim = outside / "victim"
    victim.write_bytes(b"precious\n")
    os.link(victim, box.path)
    with pytest.raises(Exception) as raised:
        MboxStore().stage(box, make_copy(BODY))
    assert reply_for_error(raised.value) == LOCAL_ERROR
    assert victim.read_bytes() == b"precious\n"
    box.path.unlink()
    os.mkfifo(box.path)
    with pytest.raises(Exception) as raised:
        MboxStore().stage(box, make_copy(BODY))
    assert reply_for_error(raised.value) == LOCAL_ERROR


def test_folder_is_used_when_present_or_created_else_inbox(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    missing = maildir_box(mail_root, folder="lists")
    MaildirStore().stage(missing, make_copy(BODY)).commit()
    assert not (missing.path / ".lists").exists()
    assert len(entries(missing.path / "new")) == 1
    MaildirStore().stage(replace(missing, create_folder=True), make_copy(BODY)).commit()
    assert (missing.path / ".lists" / "maildirfolder").read_bytes() == b""
    assert len(entries(missing.path / ".lists" / "new")) == 1
    MaildirStore().stage(missing, make_copy(BODY)).commit()
    assert len(entries(missing.path / ".lists" / "new")) == 2


def test_smtp_staging_is_all_or_nothing(mail_root: Path, outside: Path, make_copy: Callable[..., MessageCopy]) -> None:
    """SMTP: stage every copy; when one cannot be staged, abort the others and nothing is delivered."""
    maildir, mbox = maildir_box(mail_root, "alice"), mbox_box(mail_root, "bob")
    MboxStore().stage(mbox, make_copy(b"Subject: old\n\n1\n")).commit()
    before = mbox.path.read_bytes()
    broken = mbox_box(mail_root, "carol")
    broken.path.parent.mkdir(parents=True)
    broken.path.symlink_to(outside / "x")
    staged = [MaildirStore().stage(maildir, make_copy(BODY)), MboxStore().stage(mbox, make_copy(BODY))]
    with pytest.raises(OSError):
        MboxStore().stage(broken, make_copy(BODY))
    for copy in staged:
        copy.abort()
    assert entries(maildir.path / "new") == [] and entries(maildir.path / "tmp") == []
    assert mbox.path.read_bytes() == before
    assert entries(outside) == []


def fill(directory: Path) -> Path:
    """Write until the filesystem is full; the filler can be removed to free the space again."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


@pytest.mark.root
def test_full_disk_maildir_gives_452_431_and_resumes(tmpfs: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = maildir_box(tmpfs)
    store = MaildirStore()
    store.stage(box, make_copy(BODY)).commit()
    filler = fill(tmpfs)
    big = make_copy(b"Subject: big\n\n" + b"b" * 200_000 + b"\n", memory_limit=4096)
    with pytest.raises(OSError) as raised:
        store.stage(box, big)
    assert reply_for_error(raised.value) == DISK_FULL
    assert str(DISK_FULL).startswith("452 4.3.1")
    assert len(entries(box.path / "new")) == 1
    assert entries(box.path / "tmp") == []
    filler.unlink()
    store.stage(box, big).commit()
    assert len(entries(box.path / "new")) == 2


@pytest.mark.root
def test_full_disk_mbox_is_truncated_back_and_resumes(tmpfs: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = mbox_box(tmpfs)
    store = MboxStore()
    store.stage(box, make_copy(BODY)).commit()
    before = box.path.read_bytes()
    filler = fill(tmpfs)
    big = make_copy(b"Subject: big\n\n" + b"From b\n" * 40_000, memory_limit=4096)
    with pytest.raises(OSError) as raised:
        store.stage(box, big)
    assert reply_for_error(raised.value) == DISK_FULL
    assert box.path.read_bytes() == before
    assert entries(box.path.parent) == ["mbox"]
    filler.unlink()
    store.stage(box, big).commit()
    assert [m["Subject"] for m in mailbox.mbox(box.path)] == ["safe", "big"]


@pytest.mark.root
def test_created_files_belong_to_the_mail_user(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    owner = ensure_system_user()
    maildir = maildir_box(mail_root, owner=owner, folder="lists", create_folder=True, quota_bytes=10_000)
    mbox = mbox_box(mail_root, "bob", owner=owner)
    MaildirStore().stage(maildir, make_copy(BODY)).commit()
    MboxStore().stage(mbox, make_copy(BODY)).commit()
    created = [
        mail_root / "example.test",
        maildir.path.parent,
        maildir.path,
        maildir.path / "maildirsize",
        *(maildir.path / sub for sub in ("tmp", "new", "cur")),
        maildir.path / ".lists" / "maildirfolder",
        *(maildir.path / ".lists" / "new").iterdir(),
        mbox.path.parent,
        mbox.path,
    ]
    assert {path: (path.stat().st_uid, path.stat().st_gid) for path in created} == dict.fromkeys(created, owner)
