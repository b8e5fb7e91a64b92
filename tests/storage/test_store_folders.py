"""Subaddress detail → Maildir++ folder: modified UTF-7 (RFC 3501 §5.1.3) and hostile details."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mda.storage.folders import MAX_FOLDER_BYTES, encode_modified_utf7, folder_for_detail


def decode_modified_utf7(name: str) -> str:
    """Reference decoder: modified UTF-7 is UTF-7 with ``&`` for ``+`` and ``,`` for ``/``."""
    out, index = [], 0
    while index < len(name):
        if name[index] != "&":
            out.append(name[index])
            index += 1
            continue
        end = name.index("-", index)
        chunk = name[index + 1 : end]
        out.append("&" if not chunk else ("+" + chunk.replace(",", "/") + "-").encode().decode("utf-7"))
        index = end + 1
    return "".join(out)


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("lists", "lists"),
        ("Répertoire", "R&AOk-pertoire"),
        ("台北", "&U,BTFw-"),  # RFC 3501 §5.1.3 example
        ("日本語", "&ZeVnLIqe-"),  # RFC 3501 §5.1.3 example
        ("Tom & Jerry", "Tom &- Jerry"),
        ("~peter", "~peter"),
    ],
)
def test_modified_utf7_vectors(name: str, encoded: str) -> None:
    assert encode_modified_utf7(name) == encoded


@given(st.text())
def test_modified_utf7_round_trips_and_is_printable_ascii(name: str) -> None:
    encoded = encode_modified_utf7(name)
    assert all(0x20 <= ord(char) <= 0x7E for char in encoded)
    assert decode_modified_utf7(encoded) == name


@pytest.mark.parametrize(
    ("detail", "folder"),
    [
        ("lists", "lists"),
        ("Lists.python", "Lists.python"),
        ("Répertoire", "R&AOk-pertoire"),
        ("a&b", "a&-b"),
    ],
)
def test_detail_to_folder(detail: str, folder: str) -> None:
    assert folder_for_detail(detail) == folder


@pytest.mark.parametrize(
    "detail",
    [
        "",
        ".",
        "..",
        "../x",
        "../../etc",
        "a/b",
        "/abs",
        "a\0b",
        "a\nb",
        "a\x85b",
        ".hidden",
        "a.",
        "a..b",
        "INBOX",
        "inbox",
        "a%",
        "a*",
        "a\\b",
        "x" * (MAX_FOLDER_BYTES + 1),
    ],
)
def test_hostile_details_go_to_inbox(detail: str) -> None:
    assert folder_for_detail(detail) is None


@given(st.text())
def test_any_detail_gives_one_safe_path_component(detail: str) -> None:
    folder = folder_for_detail(detail)
    if folder is None:
        return
    directory = "." + folder
    assert "/" not in directory and "\0" not in directory
    assert directory not in (".", "..") and not directory.startswith("..")
    assert len(directory.encode()) <= 255
    assert all(0x20 <= ord(char) <= 0x7E for char in directory)
