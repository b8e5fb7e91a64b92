"""What the server benchmark sends: smtp-source's filler or a corpus message, the same bytes from both clients.

smtp-source sends a prepared message with ``-F FILE``: it dot-stuffs each line of the file, ends it with
CRLF, and sends one empty line before the final dot (checked by reading a stored Maildir file back:
``tests/test_bench_smoke.py``), adding no header of its own.  The latency client sends exactly those bytes
(:func:`data_payload`), so that both clients deliver the same message, :func:`stored_body`.
"""

from __future__ import annotations

import functools
import os

import corpus

FILLER = "filler"
"""smtp-source's own payload (``-l SIZE``): lines of ``X``, none ending with a period."""
KINDS = (FILLER, *corpus.KINDS)


def check_kinds(text: str) -> list[str]:
    """'prose,html' -> ['prose', 'html']; an unknown kind stops the run with the known ones."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown content kind(s) {unknown}; known: {', '.join(KINDS)}")
    return kinds


@functools.lru_cache(maxsize=8)
def source_file_bytes(kind: str, size: int) -> bytes:
    """The file smtp-source -F reads: the corpus message as stored (LF line ends, not stuffed)."""
    return corpus.message(kind, size)


def write_source_file(directory: str, kind: str, size: int) -> str:
    """Write the -F file for (kind, size) under directory and return its path."""
    path = os.path.join(directory, f"{kind}-{size}.eml")
    with open(path, "wb") as f:
        f.write(source_file_bytes(kind, size))
    return path


def stored_body(kind: str, size: int) -> bytes:
    """What a server stores after its own trace headers: the file plus smtp-source's empty last line."""
    return source_file_bytes(kind, size) + b"\n"


@functools.lru_cache(maxsize=8)
def data_payload(kind: str, size: int) -> bytes:
    """The bytes smtp-source -F sends after DATA, end marker included: each line dot-stuffed and CRLF-ended."""
    lines = stored_body(kind, size).split(b"\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"
