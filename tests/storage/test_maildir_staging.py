"""Maildir staging: nothing is visible before commit, nothing remains after abort, on both write paths.

mda writes an unnamed ``O_TMPFILE`` file where the filesystem can make one and a named ``O_EXCL`` file
in ``tmp/`` where it cannot (NFS, some FUSE); both paths keep the stage → commit/abort contract.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import replace
from pathlib import Path

import pytest

from mda.storage import fsutil
from mda.storage.maildir import MaildirStore
from tests.storage.helpers import maildir_box


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_commit_makes_the_copy_visible_only_then(mail_root, make_copy, write_path):
    box = maildir_box(mail_root)
    staged = MaildirStore().stage(box, make_copy(b"Subject: staged\n\nbody\n"))
    assert _entries(box.path / "new") == []
    tmp_names = _entries(box.path / "tmp")
    assert tmp_names == ([] if write_path == "anonymous" else [staged.name])
    result = staged.commit()
    [name] = _entries(box.path / "new")
    assert result.location.endswith(f"/new/{name}")
    assert _entries(box.path / "tmp") == []
    content = (box.path / "new" / name).read_bytes()
    assert content == b"Return-Path: <sender@example.org>\nSubject: staged\n\nbody\n"
    vsize = len(content) + content.count(b"\n")
    assert f",S={len(content)},W={vsize}" in name


def test_abort_leaves_nothing(mail_root, make_copy, write_path):
    box = maildir_box(mail_root)
    staged = MaildirStore().stage(box, make_copy(b"Subject: aborted\n\nbody\n"))
    staged.abort()
    assert _entries(box.path / "new") == []
    assert _entries(box.path / "tmp") == []


def test_flagged_copy_goes_to_cur_with_flags(mail_root, make_copy, write_path):
    box = maildir_box(mail_root)
    copy = make_copy(b"Subject: flagged\n\nbody\n")
    flagged = replace(copy, flags="FS")
    MaildirStore().stage(box, flagged).commit()
    [name] = _entries(box.path / "cur")
    assert name.endswith(":2,FS")
    assert _entries(box.path / "new") == []


@pytest.mark.parametrize("removed", ["tmp", "new", "cur"])
def test_a_missing_subdirectory_is_made_again(mail_root, make_copy, removed):
    """tmp, new and cur are opened first and made only when one is missing (a Maildir damaged by hand)."""
    box = maildir_box(mail_root)
    MaildirStore().stage(box, make_copy(b"Subject: first\n\nbody\n")).commit()
    if removed == "new":  # the first copy moves on, as an IMAP server would move it once seen
        for entry in (box.path / "new").iterdir():
            entry.rename(box.path / "cur" / f"{entry.name}:2,")
    (box.path / removed).rmdir()
    copy = make_copy(b"Subject: second\n\nbody\n")
    MaildirStore().stage(box, replace(copy, flags="S") if removed == "cur" else copy).commit()
    assert all((box.path / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert len(_entries(box.path / "new")) + len(_entries(box.path / "cur")) == 2


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening a mailbox directory: one openat2(2), or the walk a component at a time
    (kernels before 5.6, seccomp filters)."""
    if request.param == "walk":
        monkeypatch.setattr(fsutil, "_openat2_works", False)
    return str(request.param)


def test_both_directory_resolutions_deliver_and_refuse_symlinks(mail_root, tmp_path, make_copy, resolution):
    box = maildir_box(mail_root)
    MaildirStore().stage(box, make_copy(b"Subject: one\n\nbody\n")).commit()
    assert len(_entries(box.path / "new")) == 1
    outside = tmp_path / "outside"
    outside.mkdir()
    elsewhere = maildir_box(mail_root, user="mallory")
    elsewhere.path.parent.mkdir(parents=True)
    elsewhere.path.symlink_to(outside)
    with pytest.raises(OSError):
        MaildirStore().stage(elsewhere, make_copy(b"Subject: two\n\nbody\n"))
    assert _entries(outside) == []


@pytest.mark.parametrize(("error", "still_tried"), [(errno.ENOSYS, False), (errno.EPERM, False), (errno.ENOENT, True)])
def test_a_kernel_refusing_openat2_falls_back_to_the_walk(mail_root, make_copy, monkeypatch, error, still_tried):
    """Before Linux 5.6 openat2 is ENOSYS, and container seccomp filters often answer EPERM: delivery
    walks the path instead and stops trying openat2; a missing directory (ENOENT) is not such a refusal."""

    def refusing_syscall(*args: object) -> int:
        ctypes.set_errno(error)
        return -1

    monkeypatch.setattr(fsutil, "_syscall", refusing_syscall)
    monkeypatch.setattr(fsutil, "_openat2_works", True)
    box = maildir_box(mail_root)
    MaildirStore().stage(box, make_copy(b"Subject: walked\n\nbody\n")).commit()
    assert len(_entries(box.path / "new")) == 1
    assert fsutil._openat2_works is still_tried
