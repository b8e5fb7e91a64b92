"""mbox: From line, mboxrd quoting, locks (fcntl then dot-lock), truncation on failure, real processes."""

from __future__ import annotations

import errno
import fcntl
import mailbox
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mda.replies import LOCAL_ERROR, MAILBOX_BUSY, MAILBOX_FULL, MAILBOX_FULL_TEMPORARY, reply_for_error
from mda.spool import Spool
from mda.storage.base import Mailbox, MessageCopy
from mda.storage.mbox import MboxrdQuoter, MboxStore, from_line
from tests.storage.helpers import SENDER, mbox_box

CLOCK = 1_795_867_200.0  # a fixed instant: From lines are compared byte for byte
BODY = b"Subject: hello\n\nFrom the start\n>From quoted once\nplain\n"
QUOTED_BODY = b"Subject: hello\n\n>From the start\n>>From quoted once\nplain\n"
HEADER = b"Return-Path: <sender@example.org>\n"


def reference_quote(data: bytes) -> bytes:
    return re.sub(rb"(?m)^(>*From )", rb">\1", data)


def deliver(store: MboxStore, box: Mailbox, copy: MessageCopy) -> None:
    store.stage(box, copy).commit()


def test_append_writes_from_line_quotes_and_ends_with_empty_line(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    store = MboxStore(clock=lambda: CLOCK)
    box = mbox_box(mail_root)
    result = store.stage(box, make_copy(BODY)).commit()
    expected = from_line(SENDER, CLOCK) + HEADER + QUOTED_BODY + b"\n"
    assert box.path.read_bytes() == expected
    assert result.size == len(expected)
    assert re.fullmatch(
        rb"From sender@example\.org \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", from_line(SENDER, CLOCK)
    )
    assert from_line(SENDER, CLOCK).endswith(time.asctime(time.localtime(CLOCK)).encode() + b"\n")


def test_null_sender_is_mailer_daemon_and_spaces_never_split_the_line() -> None:
    assert from_line("", CLOCK).startswith(b"From MAILER-DAEMON ")
    assert from_line('"a b"@example.org', CLOCK).startswith(b'From "a_b"@example.org ')


def test_message_without_final_newline_still_ends_with_empty_line(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    store = MboxStore(clock=lambda: CLOCK)
    box = mbox_box(mail_root)
    deliver(store, box, make_copy(b"Subject: x\n\nno newline"))
    deliver(store, box, make_copy(b"Subject: y\n\nsecond\n"))
    messages = mailbox.mbox(box.path)
    assert [m.get_payload() for m in messages] == ["no newline\n", "second\n"]
    assert box.path.read_bytes().count(b"no newline\n\nFrom ") == 1


def test_previous_message_without_newline_gets_one(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = mbox_box(mail_root)
    box.path.parent.mkdir(parents=True)
    box.path.write_bytes(b"From a@b Thu Jan  1 00:00:00 2026\nSubject: old\n\ntruncated")
    deliver(MboxStore(), box, make_copy(b"Subject: new\n\nbody\n"))
    assert [m["Subject"] for m in mailbox.mbox(box.path)] == ["old", "new"]


def test_spilled_spool_is_quoted_across_chunk_boundaries(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    line = b">>From spans chunks\n" + b"x" * 70 + b"\n"
    body = b"Subject: big\n\n" + line * 5000
    box = mbox_box(mail_root)
    deliver(MboxStore(clock=lambda: CLOCK), box, make_copy(body, memory_limit=1024))
    assert box.path.read_bytes() == from_line(SENDER, CLOCK) + HEADER + reference_quote(body) + b"\n"


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_streaming_quoter_matches_reference_for_any_chunking(data: bytes, cuts: list[int]) -> None:
    quoter = MboxrdQuoter()
    pieces, start = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(quoter.feed(data[start:cut]))
        start = max(start, cut)
    pieces.append(quoter.feed(data[start:]))
    pieces.append(quoter.finish())
    assert b"".join(pieces) == reference_quote(data)


@given(st.text(alphabet=">From x\n", max_size=60), st.integers(min_value=1, max_value=7))
def test_streaming_quoter_on_from_heavy_text(text: str, size: int) -> None:
    data = text.encode()
    quoter = MboxrdQuoter()
    out = b"".join(quoter.feed(data[i : i + size]) for i in range(0, len(data), size)) + quoter.finish()
    assert out == reference_quote(data)


def test_abort_truncates_back_to_the_size_before(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    store = MboxStore()
    box = mbox_box(mail_root)
    deliver(store, box, make_copy(b"Subject: one\n\n1\n"))
    before = box.path.read_bytes()
    staged = store.stage(box, make_copy(b"Subject: two\n\n2\n"))
    assert box.path.stat().st_size > len(before)
    staged.abort()
    assert box.path.read_bytes() == before
    assert not (box.path.parent / "mbox.lock").exists()
    deliver(store, box, make_copy(b"Subject: three\n\n3\n"))
    assert [m["Subject"] for m in mailbox.mbox(box.path)] == ["one", "three"]


def test_failure_half_way_truncates(
    mail_root: Path, make_copy: Callable[..., MessageCopy], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MboxStore()
    box = mbox_box(mail_root)
    deliver(store, box, make_copy(b"Subject: one\n\n1\n"))
    before = box.path.read_bytes()
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if os.fstat(fd).st_size > len(before):
            raise OSError(errno.EIO, "simulated I/O error after the append")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError) as raised:
        store.stage(box, make_copy(b"Subject: two\n\n" + b"y" * 200_000, memory_limit=1024))
    monkeypatch.undo()
    assert reply_for_error(raised.value) == LOCAL_ERROR
    assert box.path.read_bytes() == before
    assert not (box.path.parent / "mbox.lock").exists()


def test_fresh_dotlock_times_out_with_450(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = mbox_box(mail_root, lock_timeout=0.3)
    deliver(MboxStore(), box, make_copy(b"Subject: one\n\n1\n"))
    (box.path.parent / "mbox.lock").touch()
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        MboxStore().stage(box, make_copy(b"Subject: two\n\n2\n"))
    assert reply_for_error(raised.value) == MAILBOX_BUSY
    assert str(MAILBOX_BUSY).startswith("450 4.2.0")
    assert 0.25 <= time.monotonic() - started < 3
    assert len(mailbox.mbox(box.path)) == 1


def _hold_posix_lock(
    path: str, locked: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    """A classic fcntl lock, as Dovecot or Postfix take it, in another process."""
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    locked.set()
    release.wait(30)
    os.close(fd)


def test_fcntl_lock_of_another_process_is_respected(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    box = mbox_box(mail_root, lock_timeout=0.4)
    deliver(MboxStore(), box, make_copy(b"Subject: one\n\n1\n"))
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_posix_lock, args=(str(box.path), locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(Exception) as raised:
            MboxStore().stage(box, make_copy(b"Subject: two\n\n2\n"))
        assert reply_for_error(raised.value) == MAILBOX_BUSY
        assert not (box.path.parent / "mbox.lock").exists(), "dot-lock is taken only after the fcntl lock"
    finally:
        release.set()
        holder.join(10)
    deliver(MboxStore(), box, make_copy(b"Subject: two\n\n2\n"))
    assert len(mailbox.mbox(box.path)) == 2


def test_two_threads_of_one_process_exclude_each_other(mail_root: Path, make_copy: Callable[..., MessageCopy]) -> None:
    """OFD locks conflict between descriptors of one process, where classic POSIX locks would not."""
    box = mbox_box(mail_root, lock_timeout=0.3)
    store = MboxStore()
    staged = store.stage(box, make_copy(b"Subject: one\n\n1\n"))
    (box.path.parent / "mbox.lock").unlink()  # only the fcntl lock is left to keep the second one out
    with pytest.raises(Exception) as raised:
        store.stage(box, make_copy(b"Subject: two\n\n2\n"))
    assert reply_for_error(raised.value) == MAILBOX_BUSY
    staged.commit()


def _deliver_many(root: str, worker: int, count: int) -> None:
    store = MboxStore()
    box = mbox_box(Path(root), lock_timeout=60)
    for index in range(count):
        with Spool() as spool:
            spool.write(f"Subject: {worker}-{index}\n\nFrom me\n>From you\n".encode() + b"z" * (index * 97) + b"\n")
            store.stage(box, MessageCopy(header=HEADER, body=spool, envelope_sender=SENDER)).commit()


def test_concurrent_processes_keep_every_message_whole(mail_root: Path) -> None:
    workers, count = 4, 25
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_deliver_many, args=(str(mail_root), w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    box = mbox_box(mail_root)
    messages = list(mailbox.mbox(box.path))
    assert sorted(m["Subject"] for m in messages) == sorted(f"{w}-{i}" for w in range(workers) for i in range(count))
    for message in messages:
        index = int(message["Subject"].split("-")[1])
        assert message.get_payload() == ">From me\n>>From you\n" + "z" * (index * 97) + "\n"
        assert message.get_from().startswith(SENDER + " ")


def _stage_and_hang(root: str, staged_event: multiprocessing.synchronize.Event) -> None:
    with Spool() as spool:
        spool.write(b"Subject: killed writer\n\nbody\n")
        MboxStore().stage(mbox_box(Path(root)), MessageCopy(header=HEADER, body=spool, envelope_sender=SENDER))
        staged_event.set()
        time.sleep(60)


def test_killed_writer_leaves_stale_dotlock_that_is_broken_after_the_timeout(
    mail_root: Path, make_copy: Callable[..., MessageCopy]
) -> None:
    context = multiprocessing.get_context("fork")
    staged = context.Event()
    writer = context.Process(target=_stage_and_hang, args=(str(mail_root), staged))
    writer.start()
    assert staged.wait(10)
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(10)
    box = mbox_box(mail_root, lock_timeout=0.3)
    lock = box.path.parent / "mbox.lock"
    assert lock.exists(), "kill -9 leaves the dot-lock behind (the kernel drops only the fcntl lock)"

    with pytest.raises(Exception) as raised:
        MboxStore(stale_lock_seconds=60).stage(box, make_copy(b"Subject: early\n\n1\n"))
    assert reply_for_error(raised.value) == MAILBOX_BUSY

    patient = mbox_box(mail_root, lock_timeout=5)
    started = time.monotonic()
    deliver(MboxStore(stale_lock_seconds=1), patient, make_copy(b"Subject: after\n\n2\n"))
    assert time.monotonic() - started >= 0.5
    assert not lock.exists()
    assert [m["Subject"] for m in mailbox.mbox(box.path)] == ["killed writer", "after"]


@pytest.mark.parametrize(("tempfail", "reply"), [(False, MAILBOX_FULL), (True, MAILBOX_FULL_TEMPORARY)])
def test_mbox_quota_is_the_file_size(
    mail_root: Path, make_copy: Callable[..., MessageCopy], tempfail: bool, reply: object
) -> None:
    box = mbox_box(mail_root, quota_bytes=400, quota_full_tempfail=tempfail)
    deliver(MboxStore(), box, make_copy(b"Subject: one\n\n" + b"a" * 100 + b"\n"))
    before = box.path.read_bytes()
    with pytest.raises(Exception) as raised:
        MboxStore().stage(box, make_copy(b"Subject: two\n\n" + b"b" * 300 + b"\n"))
    assert reply_for_error(raised.value) == reply
    assert box.path.read_bytes() == before
    assert not (box.path.parent / "mbox.lock").exists()
