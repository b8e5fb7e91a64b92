"""Dovecot's passwd-file: ``user:password:uid:gid:gecos:home:shell:extra fields``.

The format docker-mailserver and many Dovecot shops keep their users in. The file is re-read when its
modification time, size or inode change (checked at most once a second), so edits need no reload.
Only userdb extra fields (``userdb_mail=…``, ``userdb_quota_rule=…``, any ``userdb_NAME``) are read;
the password is never kept.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from mda.userdb.record import LookupKey, Record, UserdbError, record_from_row
from mda.userdb.settings import SourceSettings

RECHECK_SECONDS = 1.0


class PasswdFileSource:
    driver = "passwd-file"

    def __init__(self, settings: SourceSettings) -> None:
        assert settings.path is not None
        self.settings = settings
        self.label = settings.label
        self._path = settings.path
        self._lock = threading.Lock()
        self._version: tuple[int, int, int, int] | None = None
        self._checked = 0.0
        self._rows: dict[str, dict[str, Any]] = {}

    def lookup(self, key: LookupKey) -> Record | None:
        rows = self._current()
        row = rows.get(key.address if self.settings.key == "address" else key.local)
        return record_from_row(self.label, row) if row is not None else None

    def check(self) -> str:
        return f"{len(self._current())} users"

    def close(self) -> None:
        pass

    def _current(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            if self._version is not None and now - self._checked < RECHECK_SECONDS:
                return self._rows
            try:
                status = os.stat(self._path)
                version = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
                if version != self._version:
                    with open(self._path, encoding="utf-8", errors="strict") as stream:
                        self._rows = parse_passwd_file(stream.read())
                    self._version = version
            except (OSError, UnicodeDecodeError) as error:
                self._version = None
                raise UserdbError(f"cannot read {self._path}: {getattr(error, 'strerror', None) or error}") from None
            self._checked = now
            return self._rows


def parse_passwd_file(text: str) -> dict[str, dict[str, Any]]:
    """Users by name; each a mapping of userdb fields (``uid``, ``gid``, ``home``, extra fields).

    Blank lines and ``#`` comments are skipped, as Dovecot does; a line with fewer fields has the
    rest unset. Extra fields are space-separated ``userdb_NAME=value`` (the prefix is removed).
    """
    rows: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":", 7)
        user = parts[0]
        row: dict[str, Any] = {}
        for index, name in ((2, "uid"), (3, "gid"), (5, "home")):
            if len(parts) > index and parts[index]:
                row[name] = parts[index]
        if len(parts) > 7:
            for item in parts[7].split():
                name, _, value = item.partition("=")
                if name.startswith("userdb_"):
                    row[name[len("userdb_") :]] = value
        rows.setdefault(user.lower(), row)
    return rows
