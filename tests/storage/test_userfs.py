"""``fs_identity``: Linux file-system credentials are per thread, so one storage thread can work as a
user while the event loop and the other threads stay root (README, "Local users")."""

from __future__ import annotations

import os
import pwd
import tempfile
import threading
from pathlib import Path

import pytest

from mda.storage.userfs import current_fs_ids, fs_identity


def _status_ids(status: str) -> tuple[int, int]:
    """The fsuid and fsgid (fourth field of ``Uid:`` and ``Gid:``) of a /proc status text."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["Uid"].split()[3]), int(fields["Gid"].split()[3])


@pytest.mark.root
def test_fs_identity_changes_the_calling_thread_only():
    user = pwd.getpwnam("nobody")
    ids = (user.pw_uid, user.pw_gid)
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        directory = Path(scratch)
        directory.chmod(0o777)
        secret = directory / "root-only"
        secret.write_bytes(b"secret")
        secret.chmod(0o600)
        inside, release = threading.Event(), threading.Event()
        seen: dict[str, object] = {}

        def worker() -> None:
            with fs_identity(ids):
                seen["ids"] = current_fs_ids()
                seen["status"] = Path("/proc/thread-self/status").read_text()
                try:
                    secret.read_bytes()
                    seen["read"] = True
                except PermissionError:
                    seen["read"] = False
                created = os.open(directory / "made-by-worker", os.O_CREAT | os.O_WRONLY, 0o600)
                seen["created"] = os.fstat(created).st_uid, os.fstat(created).st_gid
                os.close(created)
                inside.set()
                release.wait(10)
            seen["after"] = current_fs_ids()

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            assert inside.wait(10)
            # While the worker holds the user's identity, this thread is still root in every respect.
            assert current_fs_ids() == (0, 0)
            assert _status_ids(Path("/proc/thread-self/status").read_text()) == (0, 0)
            assert secret.read_bytes() == b"secret"
            mine = os.open(directory / "made-by-main", os.O_CREAT | os.O_WRONLY, 0o600)
            assert os.fstat(mine).st_uid == 0
            os.close(mine)
        finally:
            release.set()
            thread.join(10)
        assert seen["ids"] == ids
        assert _status_ids(str(seen["status"])) == ids
        assert seen["read"] is False
        assert seen["created"] == ids
        assert seen["after"] == (0, 0)
    assert current_fs_ids() == (0, 0)


@pytest.mark.root
def test_fs_identity_restores_after_an_error():
    user = pwd.getpwnam("nobody")
    with pytest.raises(RuntimeError), fs_identity((user.pw_uid, user.pw_gid)):
        raise RuntimeError("boom")
    assert current_fs_ids() == (0, 0)


def test_fs_identity_without_a_user_changes_nothing():
    before = current_fs_ids()
    with fs_identity(None):
        assert current_fs_ids() == before
