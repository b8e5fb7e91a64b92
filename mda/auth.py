"""SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms against a hashed credentials file.

The credentials file holds ``user:hash`` lines (``#`` comments and blank lines ignored); hashes are bcrypt
(``$2b$...``, from the maintained ``bcrypt`` package) or, when ``argon2-cffi`` is installed, Argon2
(``$argon2id$...``). A plain-text password is never accepted. The file is re-read when its modification
time changes, so adding a user needs no restart. Failed attempts from one client address make the next
answer wait longer (``Throttle``), which slows password guessing without locking anyone out.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from pathlib import Path

import bcrypt

MAX_DELAY = 10.0
"""The longest a failed AUTH waits before ``535 5.7.8``."""
FORGET_AFTER = 600.0
"""Seconds after the last failure when a client address starts afresh."""


class Credentials:
    """``user → hash`` from a file, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            return {}
        with self._lock:
            if stamp != self._stamp:
                users: dict[str, str] = {}
                for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                    line = line.strip()
                    if not line or line.startswith("#") or ":" not in line:
                        continue
                    name, _, hashed = line.partition(":")
                    users[name.strip()] = hashed.strip()
                self._users, self._stamp = users, stamp
            return self._users

    def verify(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` matches its hash; unknown users cost the same."""
        hashed = self._load().get(user)
        matched = check_password(password, hashed if hashed is not None else _DUMMY_HASH)
        return matched and hashed is not None


def check_password(password: str, hashed: str) -> bool:
    """Compare against a bcrypt or Argon2 hash; any other format never matches."""
    secret = password.encode("utf-8", "surrogateescape")
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            return bcrypt.checkpw(secret, hashed.encode("ascii"))
        except ValueError:
            return False
    if hashed.startswith("$argon2"):
        try:
            import argon2  # optional: only needed for Argon2 hashes
        except ImportError:
            return False
        try:
            return bool(argon2.PasswordHasher().verify(hashed, secret))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    return False


_DUMMY_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(rounds=10)).decode("ascii")
"""Checked for unknown users so that timing does not tell which users exist."""


class Throttle:
    """Per-address failure count → delay before the ``535`` reply: 0.5 s, 1 s, 2 s... up to ``MAX_DELAY``."""

    def __init__(self, base: float = 0.5) -> None:
        self.base = base
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, client: str) -> float:
        count, last = self._failures.get(client, (0, 0.0))
        if not count or time.monotonic() - last > FORGET_AFTER:
            return 0.0
        return min(MAX_DELAY, self.base * 2 ** (count - 1))

    def failed(self, client: str) -> None:
        count, last = self._failures.get(client, (0, 0.0))
        if time.monotonic() - last > FORGET_AFTER:
            count = 0
        self._failures[client] = (count + 1, time.monotonic())
        if len(self._failures) > 10000:
            oldest = min(self._failures, key=lambda key: self._failures[key][1])
            del self._failures[oldest]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def decode_plain(payload: str) -> tuple[str, str] | None:
    """RFC 4616 ``[authzid] NUL authcid NUL passwd`` in base64; None when malformed.

    An authorization identity other than the authentication identity is refused (no proxy logins).
    """
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    parts = raw.split(b"\0")
    if len(parts) != 3:
        return None
    authzid, authcid, password = (part.decode("utf-8", "surrogateescape") for part in parts)
    if not authcid or (authzid and authzid != authcid):
        return None
    return authcid, password


def decode_base64_text(payload: str) -> str | None:
    """One base64 line of the LOGIN mechanism, as text; None when malformed."""
    try:
        return base64.b64decode(payload, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None
