"""Directory descriptors kept open between deliveries (README, "Storage"): reused for about a second,
never closed under a user, never shared with a forked child, and a Maildir removed meanwhile is made
again at its configured path."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mda import storage
from mda.storage import maildir
from mda.storage.base import Mailbox
from mda.storage.dircache import DirectoryCache
from mda.storage.maildir import MaildirStore
from mda.storage.userfs import UnsafeUserFile
from tests.clients import Client, transaction
from tests.conftest import basic_config
from tests.policy.system_users import homes, make_user
from tests.storage.helpers import maildir_box
from tests.waiting import wait_for

__all__ = ["homes", "make_user"]


class Clock:
    """A monotonic clock the test moves by hand, in place of the cache's."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(maildir._maildirs, "clock", fake)
    return fake


@pytest.fixture(params=["disk", "tmpfs"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A mail root on the test's disk and one on tmpfs: a removed directory fails differently on each
    (ext4 refuses O_TMPFILE in it, tmpfs makes the file and refuses the link)."""
    if request.param == "disk":
        yield tmp_path / "mail"
        return
    directory = Path(tempfile.mkdtemp(prefix="mda-reuse-", dir="/dev/shm"))
    try:
        yield directory / "mail"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _new(box_path: Path) -> list[str]:
    new = box_path / "new"
    return sorted(p.name for p in new.iterdir()) if new.is_dir() else []


def _deliver(box, make_copy, text: bytes = b"Subject: x\n\nbody\n") -> str:
    return MaildirStore().stage(box, make_copy(text)).commit().location


def test_a_removed_maildir_is_made_again_at_its_path(root, make_copy, write_path, clock):
    box = maildir_box(root)
    _deliver(box, make_copy)
    shutil.rmtree(box.path)
    location = _deliver(box, make_copy)  # at once: the descriptors of the first are still kept
    assert Path(location).parent == box.path / "new"
    assert len(_new(box.path)) == 1
    assert all((box.path / sub).is_dir() for sub in ("tmp", "new", "cur"))


def test_a_removed_mail_root_is_made_again(root, make_copy, write_path, clock):
    """The configured root is kept open too; removed with everything in it, it is made again."""
    box = maildir_box(root)
    _deliver(box, make_copy)
    assert _held(root)
    shutil.rmtree(root)
    _deliver(box, make_copy)
    assert len(_new(box.path)) == 1 and len(_held(root)) == 1


def test_a_maildir_removed_between_stage_and_commit_gets_the_copy_at_its_path(root, make_copy, write_path, clock):
    box = maildir_box(root)
    _deliver(box, make_copy)
    staged = MaildirStore().stage(box, make_copy(b"Subject: second\n\nbody\n"))
    shutil.rmtree(box.path / "new")
    shutil.rmtree(box.path / "cur")
    if write_path == "anonymous":  # the named file lives in tmp/: only new/ and cur/ can go
        shutil.rmtree(box.path)
    result = staged.commit()
    assert Path(result.location).parent == box.path / "new"
    assert len(_new(box.path)) == 1


def test_a_maildir_renamed_away_keeps_its_copies_until_the_descriptors_expire(tmp_path, make_copy, clock):
    """The one window the reuse adds to what a rename during a delivery already does: for up to
    ``dircache.LIFETIME`` the copies follow the renamed directory; afterwards the configured path is
    made again."""
    box = maildir_box(tmp_path / "mail")
    _deliver(box, make_copy)
    moved = box.path.with_name("Maildir.old")
    box.path.rename(moved)
    _deliver(box, make_copy)
    assert len(_new(moved)) == 2 and not box.path.exists()
    clock.now += maildir._maildirs.lifetime
    _deliver(box, make_copy)
    assert len(_new(moved)) == 2 and len(_new(box.path)) == 1


def test_a_maildir_replaced_by_a_symlink_is_refused_even_while_kept(tmp_path, make_copy, clock):
    box = maildir_box(tmp_path / "mail")
    _deliver(box, make_copy)
    outside = tmp_path / "outside"
    (outside / "new").mkdir(parents=True)
    shutil.rmtree(box.path)
    box.path.symlink_to(outside)
    with pytest.raises(OSError) as raised:
        _deliver(box, make_copy)
    assert raised.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert _new(outside) == []


def _held(path: Path) -> list[str]:
    """This process's descriptors open on ``path``."""
    return [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path)]


def test_descriptors_are_kept_for_the_lifetime_and_then_replaced(tmp_path, make_copy, clock):
    """After a delivery its Maildir's new/ stays open; the next delivery within the lifetime opens no
    directory (the same descriptor, nothing more held), and once expired it is opened anew."""
    box = maildir_box(tmp_path / "mail")
    _deliver(box, make_copy)
    [kept] = _held(box.path / "new")
    before = set(os.listdir("/proc/self/fd"))
    _deliver(box, make_copy)
    assert set(os.listdir("/proc/self/fd")) == before and _held(box.path / "new") == [kept]
    assert len(_new(box.path)) == 2
    clock.now += maildir._maildirs.lifetime
    _deliver(box, make_copy)  # expired: opened again, the old descriptors closed
    assert len(_held(box.path / "new")) == 1 and len(os.listdir("/proc/self/fd")) == len(before)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        return error.errno == errno.EBADF
    return False


def test_an_evicted_or_expired_entry_closes_only_when_its_last_user_is_done(tmp_path):
    clock = Clock()
    cache: DirectoryCache[str] = DirectoryCache(capacity=2, lifetime=1.0, clock=clock)
    fds = {name: os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) for name in "abc"}
    first = cache.insert("a", {"dir": fds["a"]}, tmp_path)
    cache.release(cache.insert("b", {"dir": fds["b"]}, tmp_path))
    cache.release(cache.insert("c", {"dir": fds["c"]}, tmp_path))  # evicts "a", still leased
    assert cache.lease("a") is None and not _closed(fds["a"])
    cache.release(first)
    assert _closed(fds["a"])
    again = cache.lease("b")
    assert again is not None
    clock.now += 1.0
    assert cache.lease("b") is None and not _closed(fds["b"])  # expired, but in use
    cache.release(again)
    assert _closed(fds["b"])
    assert cache.lease("c") is None and _closed(fds["c"])  # expired and unused: closed at once


def test_many_threads_share_and_evict_without_closing_under_each_other(tmp_path, make_copy, monkeypatch):
    """32 storage threads, 8 Maildirs, a cache of 3 entries and a lifetime of zero: entries are replaced
    and evicted all the time while others still write through them; every copy arrives."""
    monkeypatch.setattr(maildir._maildirs, "capacity", 3)
    monkeypatch.setattr(maildir._maildirs, "lifetime", 0.0005)
    boxes = [maildir_box(tmp_path / "mail", user=f"u{n}") for n in range(8)]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for n in range(20):
                _deliver(boxes[(seed + n) % len(boxes)], make_copy)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(_new(box.path)) for box in boxes) == 32 * 20


def test_a_forked_child_uses_none_of_its_parents_descriptors(tmp_path, make_copy, clock):
    box = maildir_box(tmp_path / "mail")
    _deliver(box, make_copy)
    entry = maildir._maildirs.lease(maildir._cache_key(box))
    assert entry is not None
    maildir._maildirs.release(entry)
    kept = set(entry.fds.values())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        closed = all(_closed(fd) for fd in kept)
        os.write(write_end, b"%d %d" % (len(maildir._maildirs), closed))
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read() == b"0 1"
    assert not any(_closed(fd) for fd in kept)
    _deliver(box, make_copy)
    assert len(_new(box.path)) == 2


def _directories_held(pid: int, path: Path) -> set[str]:
    """The directories below ``path`` that process ``pid`` or its children hold open."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    held: set[str] = set()
    for each in pids:
        for fd in Path(f"/proc/{each}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(path)):
                held.add(target)
    return held


def test_a_server_keeps_a_maildir_open_and_remakes_it_when_removed(start_mda, tmp_path):
    """Through LMTP: the worker holds the Maildir's new/ open after a delivery; the Maildir removed
    by hand right after is made again at its path by the next delivery, which gets its 250; once idle,
    the worker holds nothing."""
    root = tmp_path / "mail"
    server = start_mda(basic_config(root, workers=1))
    maildir_path = root / "example.test" / "alice" / "Maildir"
    message = b"Subject: reuse\r\n\r\nbody\r\n"
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        _, replies = transaction(client, "s@remote.test", ["alice@example.test"], message)
        assert [reply.code for reply in replies] == [250]
        assert f"{maildir_path}/new" in _directories_held(server.process.pid, root)
        shutil.rmtree(maildir_path)
        _, replies = transaction(client, "s@remote.test", ["alice@example.test"], message)
        assert [reply.code for reply in replies] == [250]
    wait_for(lambda: len(_new(maildir_path)) == 1, what="the copy in the made-again Maildir")
    # Idle, the server lets go of every directory of the mail filesystem within a couple of seconds
    # (an unmount is not kept busy): its heartbeat closes what expired.
    wait_for(lambda: not _directories_held(server.process.pid, root), what="no mail directory held while idle")


@pytest.mark.root
def test_a_system_users_home_is_checked_for_every_delivery(make_user, make_copy, clock):
    """Kept descriptors never carry a delivery past the home check: a home given away between two
    deliveries a moment apart refuses the second, as when every delivery opened the home."""
    user = make_user()
    home = Path(user.pw_dir)
    box = Mailbox(format="maildir", path=home / "Maildir", root=home, system_user=(user.pw_uid, user.pw_gid))
    storage.stage(box, make_copy(b"Subject: first\n\nbody\n")).commit()
    [first] = (home / "Maildir" / "new").iterdir()
    assert first.stat().st_uid == user.pw_uid
    os.chown(home, 0, 0)
    with pytest.raises(UnsafeUserFile):
        storage.stage(box, make_copy(b"Subject: second\n\nbody\n"))
    assert len(_new(home / "Maildir")) == 1
