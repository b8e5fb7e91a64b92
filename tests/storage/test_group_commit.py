"""Group commit: concurrent committers into one directory share directory fsyncs, and none returns early."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mda.storage import fsutil


def test_concurrent_committers_share_fsyncs_and_each_waits_for_one_that_covers_it(tmp_path: Path, monkeypatch):
    calls: list[tuple[float, float]] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        started = time.monotonic()
        time.sleep(0.02)
        real_fsync(fd)
        calls.append((started, time.monotonic()))

    monkeypatch.setattr(fsutil.os, "fsync", slow_fsync)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def committer() -> None:
        linked = time.monotonic()
        fsutil.fsync_directory_shared(fd, str(tmp_path))
        with lock:
            spans.append((linked, time.monotonic()))

    threads = [threading.Thread(target=committer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.close(fd)
    assert len(spans) == 16
    assert 0 < len(calls) < 16, f"{len(calls)} fsyncs for 16 committers"
    for linked, returned in spans:
        assert any(start >= linked and end <= returned for start, end in calls), "returned before a covering fsync"


def test_a_failed_fsync_is_reported_to_its_caller(tmp_path: Path, monkeypatch):
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(fsutil.os, "fsync", failing_fsync)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            fsutil.fsync_directory_shared(fd, str(tmp_path / "x"))
    finally:
        os.close(fd)
