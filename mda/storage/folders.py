"""From an address ``+detail`` to a Maildir++ folder name that is safe to use on disk, or None (INBOX).

The detail is text a remote client chose, so it is treated as hostile: it may name a folder below the
recipient's Maildir and nothing else. Maildir++ (Courier's layout, which Dovecot reads) stores folder
``Name`` as the directory ``.Name`` and its hierarchy with ``.`` (``Lists.python`` is ``.Lists.python``);
non-ASCII names are stored in IMAP's modified UTF-7 (RFC 3501 §5.1.3), so Dovecot lists them as the user
wrote them. The result is the on-disk name *without* the leading dot, as ``Mailbox.folder`` expects.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from mda.storage.base import Mailbox

HIERARCHY_SEPARATOR = "."
"""Maildir++ hierarchy separator: ``.a.b`` is folder ``b`` inside folder ``a``."""

MAX_FOLDER_BYTES = 200
"""A folder name must fit one file name (NAME_MAX 255) with its leading dot and room to spare."""

_REFUSED_CHARACTERS = frozenset("/\\%*")
"""``/`` and ``\\`` are path separators; ``%`` and ``*`` are IMAP LIST wildcards (RFC 3501 §6.3.8), so
a folder holding them could not be listed by name."""


def encode_modified_utf7(name: str) -> str:
    """Encode a mailbox name in IMAP modified UTF-7 (RFC 3501 §5.1.3).

    Printable US-ASCII (0x20-0x7e) stands for itself, ``&`` is written ``&-``, and every run of other
    characters is UTF-16BE in modified BASE64 (``,`` for ``/``, no ``=`` padding) between ``&`` and ``-``.
    """
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def folder_for_detail(detail: str) -> str | None:
    """The Maildir++ folder (on-disk name without the leading dot) for ``detail``, or None for INBOX.

    None when the detail is empty, is INBOX itself (RFC 3501 §5.1: INBOX is case-insensitive), holds a
    control character, NUL, a path separator or a LIST wildcard, has an empty hierarchy level (leading,
    trailing or doubled ``.``, which also rules out ``.`` and ``..``), or is too long for a file name.
    Every refusal delivers to INBOX: a hostile detail never escapes the Maildir nor fails the delivery.
    """
    if not detail or detail.upper() == "INBOX":
        return None
    if any(_is_control(char) or char in _REFUSED_CHARACTERS for char in detail):
        return None
    if any(level == "" for level in detail.split(HIERARCHY_SEPARATOR)):
        return None
    encoded = encode_modified_utf7(detail)
    if len(encoded.encode("ascii")) > MAX_FOLDER_BYTES:
        return None
    return encoded


def _is_control(char: str) -> bool:
    """C0, DEL and C1 controls: never part of a folder name (they would also break log lines)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def count_folders(maildir_fd: int) -> int:
    """Maildir++ folders (``.Name`` directories) in the Maildir open at ``maildir_fd``."""
    with os.scandir(maildir_fd) as entries:
        return sum(
            1
            for entry in entries
            if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir(follow_symlinks=False)
        )


@dataclass
class NewFolderBudget:
    """How many folders one message may still create (``storage.max_new_folders``).

    A transaction names its folders itself (``user+anything@``, or Sieve ``fileinto :create``): without
    a bound, one message with a thousand recipients makes a thousand folders. Beyond the budget a
    missing folder is not created and that copy goes to INBOX; existing folders are always used.
    """

    left: int
    granted: set[Path] = field(default_factory=set)

    def admit(self, mailbox: Mailbox) -> Mailbox:
        """``mailbox`` as it may be stored: unchanged, or without the right to create its folder."""
        if mailbox.folder is None or not mailbox.create_folder:
            return mailbox
        path = mailbox.path / f".{mailbox.folder}"
        if path in self.granted or path.is_dir():
            return mailbox
        if self.left > 0:
            self.left -= 1
            self.granted.add(path)
            return mailbox
        return replace(mailbox, create_folder=False)
