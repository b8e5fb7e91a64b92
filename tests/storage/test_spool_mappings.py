"""The spool's memory mappings are kept for the next messages, a few at most, and never while a store
still reads one: a reused mapping must hold exactly the new message's bytes."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from mda.spool import KEPT_MAPPINGS, MAPPINGS, MEMORY_LIMIT, MemoryBudget, Spool


@pytest.fixture(autouse=True)
def no_kept_mappings():
    MAPPINGS.clear()
    yield
    MAPPINGS.clear()


def mapped_spool(data: bytes) -> Spool:
    """A spool past 64 KiB (so in an anonymous mapping) holding ``data``, with a budget of its own."""
    spool = Spool(budget=MemoryBudget(4 * MEMORY_LIMIT))
    spool.write(data)
    assert spool.in_memory
    return spool


def test_a_kept_mapping_serves_the_next_message_with_its_own_bytes_only(tmp_path: Path) -> None:
    first = mapped_spool(b"a\n" * 700_000)
    first.close()
    assert len(MAPPINGS) == 1
    second = mapped_spool(b"b" * 100_000)
    second.write(b"c\n" * 50)
    assert len(MAPPINGS) == 0  # it took the kept mapping
    expected = b"b" * 100_000 + b"c\n" * 50
    assert second.read_all() == expected and second.newlines == 50
    target = tmp_path / "copy"
    with target.open("wb") as out:
        second.copy_to(out.fileno())
    assert target.read_bytes() == expected
    second.close()
    assert len(MAPPINGS) == 1


def test_only_a_few_mappings_are_kept() -> None:
    spools = [mapped_spool(b"x" * 100_000) for _ in range(KEPT_MAPPINGS + 3)]
    for spool in spools:
        spool.close()
    assert len(MAPPINGS) == KEPT_MAPPINGS


def test_a_mapping_still_being_read_is_not_reused() -> None:
    """A store copying from the spool (here into a pipe nobody drains yet) when the spool is closed: its
    mapping is not handed to the next message, so the copy still gets the first message's bytes."""
    data = bytes(range(256)) * 4096  # 1 MiB, far more than a pipe holds
    spool = mapped_spool(data)
    read_end, write_end = os.pipe()

    def copy() -> None:
        with contextlib.suppress(BrokenPipeError):  # the test failed and stopped reading
            spool.copy_to(write_end)

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    try:
        received = bytearray(os.read(read_end, 1))  # the copy has started and holds its view
        spool.close()
        assert len(MAPPINGS) == 0
        other = mapped_spool(b"z" * len(data))  # a new message, in a new mapping
        while len(received) < len(data):
            received += os.read(read_end, 1 << 16)
        assert bytes(received) == data
        assert other.read_all() == b"z" * len(data)
        other.close()
    finally:
        os.close(read_end)
        copier.join(timeout=30)
        os.close(write_end)


def test_a_forked_process_keeps_none_of_its_parents_mappings() -> None:
    mapped_spool(b"x" * 100_000).close()
    assert len(MAPPINGS) == 1
    pid = os.fork()
    if pid == 0:
        os._exit(0 if len(MAPPINGS) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(MAPPINGS) == 1
