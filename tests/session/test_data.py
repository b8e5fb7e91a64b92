"""The DATA and BDAT decoders on hand-made wire input: end marker, unstuffing, bare newlines, limits, and the
same result however the input is cut."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mda.dataread import DataResult, HeaderFilter
from mda.session.data import ChunkDecoder, DotDecoder, MessageSink
from mda.spool import Spool
from tests.clients import dot_stuff


def read(
    wire: bytes, *, max_size: int = 10**9, normalize: bool = False, piece: int | None = None
) -> tuple[bytes, DataResult, bytes]:
    """Decode DATA from ``wire`` fed in pieces of ``piece`` bytes (all at once by default): the stored
    bytes, the result, and what follows the end marker."""
    with Spool(memory_limit=1000) as spool:
        decoder = DotDecoder(MessageSink(spool, max_size=max_size, normalize_bare=normalize, max_header_size=None))
        step = piece or max(len(wire), 1)
        rest = b""
        for start in range(0, len(wire), step):
            chunk = wire[start : start + step]
            used = decoder.feed(chunk)
            if used is not None:
                rest = chunk[used:] + wire[start + step :]
                break
        else:
            raise AssertionError("no end marker")
        result = decoder.finish()
        stored = spool.read_all()
        assert spool.newlines == stored.count(b"\n")  # what Maildir's W= size is computed from
        return stored, result, rest


def read_chunks(chunks: list[bytes], *, normalize: bool = False) -> tuple[bytes, DataResult]:
    with Spool(memory_limit=1000) as spool:
        decoder = ChunkDecoder(MessageSink(spool, max_size=10**9, normalize_bare=normalize, max_header_size=None))
        for chunk in chunks:
            decoder.feed(chunk)
        result = decoder.finish()
        return spool.read_all(), result


@pytest.mark.parametrize(
    ("wire", "stored", "rest"),
    [
        (b".\r\nQUIT\r\n", b"", b"QUIT\r\n"),
        (b"a\r\n.\r\nNOOP\r\n", b"a\n", b"NOOP\r\n"),
        (b"..\r\n...x\r\n.\r\n", b".\n..x\n", b""),
        (b"end.\r\n.x\r\n.\r\n", b"end.\nx\n", b""),
        (
            b"Return-Path: <a>\r\n\tfolded\r\nX: y\r\n\r\nReturn-Path: body\r\n.\r\n",
            b"X: y\n\nReturn-Path: body\n",
            b"",
        ),
    ],
)
def test_end_marker_unstuffing_and_return_path(wire, stored, rest):
    got, _, left = read(wire)
    assert (got, left) == (stored, rest)


def test_bare_lf_dot_lf_does_not_end_data():
    got, result, rest = read(b"a\n.\nMAIL FROM:<x>\r\n.\r\n")
    assert result.bare_newlines == 2
    assert rest == b""
    assert got == b"a\n.\nMAIL FROM:<x>\n"


def test_limit_drains_and_flags():
    _got, result, rest = read(b"x" * 5000 + b"\r\n.\r\nNOOP\r\n", max_size=100)
    assert result.too_big and rest == b"NOOP\r\n"


def test_overlong_line_is_kept_whole():
    line = b"y" * 300_000
    got, _, _ = read(line + b"\r\n.\r\n")
    assert got == line + b"\n"


@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=50))
def test_round_trip_of_any_lines(lines):
    assume(not any(line.lower().startswith(b"return-path:") for line in lines))
    message = b"".join(line + b"\n" for line in lines)
    got, result, rest = read(dot_stuff(message) + b".\r\n" + b"NEXT\r\n")
    assert got == message
    assert result.size == len(message) and result.bare_newlines == 0
    assert rest == b"NEXT\r\n"


@pytest.mark.parametrize(
    ("wire", "stored", "bare", "rest"),
    [
        # A bare CR before ".CRLF" is no end marker (an SMTP smuggling variant), wherever blocks split.
        (b"a\r\n\r.\r\nb\r\n.\r\nNEXT", b"a\n\r.\nb\n", 1, b"NEXT"),
        (b"\r.\r\nb\r\n.\r\nNEXT", b"\r.\nb\n", 1, b"NEXT"),
        # An empty line, then the end.
        (b"a\r\n\r\n.\r\nNEXT", b"a\n\n", 0, b"NEXT"),
        (b"\r\n.\r\nNEXT", b"\n", 0, b"NEXT"),
        # LF . CRLF after a bare LF is text; a dot line right after it ends the data.
        (b"a\n.\r\n.\r\nNEXT", b"a\n.\n", 1, b"NEXT"),
        (b"a\n.\r\nb\r\n.\r\nNEXT", b"a\n.\nb\n", 1, b"NEXT"),
        # Sentences ending at line ends are ordinary text.
        (b"One.\r\nTwo.\r\n.Three.\r\n..\r\n.\r\nNEXT", b"One.\nTwo.\nThree.\n.\n", 0, b"NEXT"),
    ],
)
def test_end_marker_needs_crlf_dot_crlf(wire, stored, bare, rest):
    got, result, left = read(wire)
    assert (got, result.bare_newlines, left) == (stored, bare, rest)


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64, 1000])
@pytest.mark.parametrize(
    "wire",
    [
        b"a\r\n\r.\r\nb.\r\n\r\n..\r\n.x\r\n\r\n.\r\nNEXT\r\n",
        b"x" * 70_000 + b"\r\n.\r\n" + b"." * 3 + b"\r\n" + b"y" * 65_534 + b"\r\n.\r\nNEXT\r\n",
    ],
)
def test_any_split_of_the_wire_gives_the_same_result(wire, piece):
    assert read(wire, piece=piece) == read(wire)


@given(
    lines=st.lists(
        st.sampled_from([b"", b".", b"..", b"a.", b".x", b"\r", b"\n", b"\r.", b"x\n.", b"y" * 30]), max_size=30
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_cut_of_hostile_lines_gives_the_same_result(lines, cuts):
    """Bare CR and LF, dots and empty lines anywhere; cutting the wire at any bytes changes nothing."""
    wire = b"".join(line + b"\r\n" for line in lines) + b".\r\nNEXT"
    whole = read(wire)
    bounds = [0, *sorted(cut for cut in cuts if cut < len(wire)), len(wire)]
    with Spool(memory_limit=1000) as spool:
        decoder = DotDecoder(MessageSink(spool, max_size=10**9, normalize_bare=False, max_header_size=None))
        rest = None
        for start, end in itertools.pairwise(bounds):
            used = decoder.feed(wire[start:end])
            if used is not None:
                rest = wire[start + used :]
                break
        assert (spool.read_all(), decoder.finish(), rest) == whole


@pytest.mark.parametrize(
    ("chunks", "stored", "bare"),
    [
        ([b"a\r\nb\r\n"], b"a\nb\n", 0),
        ([b"a\r", b"\nb\r\n"], b"a\nb\n", 0),
        ([b"a\r", b"", b"\n"], b"a\n", 0),
        ([b"a\r", b"b"], b"a\rb", 1),
        ([b".x\r\n..\r\n"], b".x\n..\n", 0),  # BDAT is not dot-stuffed
        ([b"a\nb\r"], b"a\nb\r", 2),
    ],
)
def test_bdat_chunks_join_crlf_across_chunks(chunks, stored, bare):
    got, result = read_chunks(chunks)
    assert (got, result.bare_newlines) == (stored, bare)


@given(
    fields=st.lists(st.binary(min_size=0, max_size=40).map(lambda b: b"X: " + b.replace(b"\n", b"")), max_size=60),
    limit=st.integers(min_value=1, max_value=1500),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_header_limit_is_the_same_however_the_header_arrives(fields, limit, cuts):
    """``max_header_size`` counts the header section with its empty line, whatever the block boundaries."""
    message = b"".join(field + b"\n" for field in fields) + b"\nbody\n"
    expected = len(message) - len(b"body\n") > limit
    header = HeaderFilter(limit)
    stored = b""
    bounds = [0, *sorted(cut for cut in cuts if cut < len(message)), len(message)]
    for start, end in itertools.pairwise(bounds):
        stored += header.feed(message[start:end])
    stored += header.flush()
    assert header.too_big == expected
    if not expected:
        assert stored == message


def test_header_collection_is_linear_in_small_writes():
    """A header arriving in many tiny writes (one BDAT chunk per line) is searched once, not once per write:
    100,000 writes take a fraction of a second instead of half a minute."""
    spool = Spool()
    started = time.process_time()
    for _ in range(100_000):
        spool.write(b"a:b\n")
    spool.write(b"\nbody\n")
    assert time.process_time() - started < 5
    assert spool.header_section() == b"a:b\n" * 100_000


def read_cut(wire: bytes, bounds: list[int]) -> tuple[bytes, DataResult, bytes]:
    """Decode DATA from ``wire`` cut at ``bounds`` (offsets, ascending), as separate socket reads."""
    with Spool(memory_limit=1000) as spool:
        decoder = DotDecoder(MessageSink(spool, max_size=10**9, normalize_bare=False, max_header_size=None))
        for start, end in itertools.pairwise([0, *bounds, len(wire)]):
            used = decoder.feed(wire[start:end])
            if used is not None:
                result = decoder.finish()
                stored = spool.read_all()
                assert spool.newlines == stored.count(b"\n")
                return stored, result, wire[start + used :]
        raise AssertionError("no end marker")


BIG = b"x" * 70_000
"""Longer than one 64 KiB socket read, so the marker falls inside the second piece."""


@pytest.mark.parametrize(
    "wire",
    [
        b".\r\nNEXT\r\n",  # an empty message: the marker right at the start of DATA
        b"a\r\n.\r\nNEXT\r\n",
        BIG + b"\r\n.\r\nNEXT\r\n",
        BIG + b"\r\n..\r\n.\r\n.\r\nNEXT\r\n",  # a stuffed dot line, then the marker
        b"\r\n.\r\nNEXT\r\n",  # an empty line, then the marker
    ],
    ids=["empty", "short", "big", "big-stuffed", "empty-line"],
)
def test_end_marker_split_at_every_offset(wire):
    """Cut once or twice anywhere near the marker (one byte per read included): the same stored bytes,
    and the bytes after the marker are left for the next command."""
    whole = read(wire)
    marker = wire.rindex(b".\r\nNEXT")
    near = range(max(marker - 6, 1), min(marker + 6, len(wire)))
    for cut in near:
        assert read_cut(wire, [cut]) == whole, cut
        for second in range(cut + 1, min(cut + 4, len(wire))):
            assert read_cut(wire, [cut, second]) == whole, (cut, second)


@pytest.mark.parametrize(
    ("line", "stored"),
    [(b"..x", b".x"), (b"..", b"."), (b"...", b".."), (b".x", b"x"), (b"x.", b"x.")],
)
def test_stuffed_line_at_a_read_boundary(line, stored):
    """A dot-stuffed line whose CRLF, dots or text fall on either side of a read boundary is unstuffed
    exactly once, wherever the boundary is."""
    wire = BIG + b"\r\n" + line + b"\r\nz\r\n.\r\n"
    start = len(BIG)
    expected = BIG + b"\n" + stored + b"\nz\n"
    for cut in range(start - 1, start + len(line) + 4):
        got, result, rest = read_cut(wire, [cut])
        assert (got, result.bare_newlines, rest) == (expected, 0, b""), cut


@pytest.mark.parametrize(
    ("after", "stored", "bare"),
    [
        (b"\n", b"a\n\n", 0),  # CR at the end of one read, LF at the start of the next: one line end
        (b"b", b"a\rb\n", 1),  # a bare CR, counted
        (b".", b"a\r.\n", 1),  # bare CR, then ".CRLF": text, not the end marker (smuggling)
        (b"\r", b"a\r\r\n", 2),
    ],
)
def test_cr_at_the_end_of_a_read(after, stored, bare):
    wire = b"a\r" + after + b"\r\n.\r\nNEXT"
    got, result, rest = read_cut(wire, [2])
    assert (got, result.bare_newlines, rest) == (stored, bare, b"NEXT")
    big = BIG[:65_535] + wire  # the CR as the last byte of a full 64 KiB read
    got, result, rest = read_cut(big, [65_537])
    assert (got, result.bare_newlines, rest) == (BIG[:65_535] + stored, bare, b"NEXT")


@given(
    fields=st.lists(
        st.sampled_from(
            [b"Return-Path: <a@b>", b"return-path:<>", b" folded", b"\tfolded", b"X: y", b"Subject: return-path: no"]
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_return_path_dropped_however_the_header_arrives(fields, cuts):
    """``Return-Path`` fields and their continuation lines are dropped whatever the cuts; the spool's line
    count (Maildir's ``W=``) matches what it stores."""
    message = b"".join(field + b"\n" for field in fields) + b"\nReturn-Path: body\n.dot\n"
    kept, dropping = [], False
    for field in fields:
        if field[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(field)
            continue
        dropping = field[:12].lower() == b"return-path:"
        if not dropping:
            kept.append(field)
    expected = b"".join(field + b"\n" for field in kept) + b"\nReturn-Path: body\n.dot\n"
    wire = dot_stuff(message) + b".\r\n"
    bounds = sorted({cut for cut in cuts if 0 < cut < len(wire)})
    got, result, rest = read_cut(wire, bounds)
    assert (got, result.size, rest) == (expected, len(expected), b"")


def reference(wire: bytes, normalize: bool) -> tuple[bytes, int, bytes]:
    """What DATA means, line by line (lines end at CRLF only): stored bytes, bare newlines, the rest."""
    lines = wire.split(b"\r\n")
    end = lines.index(b".")  # the first line that is a lone dot, followed by CRLF
    text = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:end])
    crlf = text.count(b"\r\n")
    bare = text.count(b"\r") - crlf + text.count(b"\n") - crlf
    stored = text.replace(b"\r\n", b"\n")
    return (stored.replace(b"\r", b"\n") if normalize else stored), bare, b"\r\n".join(lines[end + 1 :])


@given(
    parts=st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\n\r", b"\r\n.", b"\r\n.."]), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    normalize=st.booleans(),
)
def test_bare_newlines_anywhere_match_the_line_by_line_meaning(parts, cuts, normalize):
    """CR and LF in any order and number (as many bare CR as bare LF included, where counting alone is
    fooled), dots at line starts: the stored bytes and the bare newline count are those of the line by
    line reading, however the input is cut."""
    wire = b"".join(parts) + b"\r\n.\r\nNEXT"
    stored, bare, rest = reference(wire, normalize)
    bounds = sorted({cut for cut in cuts if 0 < cut < len(wire)})
    with Spool(memory_limit=1000) as spool:
        decoder = DotDecoder(MessageSink(spool, max_size=10**9, normalize_bare=normalize, max_header_size=None))
        for start, end in itertools.pairwise([0, *bounds, len(wire)]):
            used = decoder.feed(wire[start:end])
            if used is not None:
                left = wire[start + used :]
                break
        result = decoder.finish()
        assert (spool.read_all(), result.bare_newlines, left) == (stored, bare, rest)
        assert spool.newlines == stored.count(b"\n")
