"""SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms against a hashed credentials file.

The credentials file holds ``user:hash`` lines (``#`` comments and blank lines ignored); hashes are bcrypt
(``$2b$...``, from the maintained ``bcrypt`` package) or, when ``argon2-cffi`` is installed, Argon2
(``$argon2id$...``). A plain-text password is never accepted. The file is re-read when its modification
time changes, so adding a user needs no restart.

Guessing is slowed the way Dovecot's ``auth_penalty`` does it: every attempt from a client address waits
before its password is checked (``Throttle``), longer after each failure, whatever connection it comes
on. A client that hangs up before its answer has still waited, and learns nothing sooner. An unknown user
is checked against a dummy hash of the same algorithm and cost as the file's own hashes, so the answer
takes as long as for a real user. Hashes are checked in a few threads of their own: an AUTH flood does
not take the storage threads that deliveries need.

All of it belongs to one ``Authenticator``, which the serving process (``mda.app.Application``) owns and
its listeners share: nothing here is module state, so a forked worker starts with nothing of its parent's.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt

MAX_DELAY = 10.0
"""The longest an AUTH attempt waits before its password is checked."""
FORGET_AFTER = 600.0
"""Seconds after the last attempt when a client address starts afresh."""
VERIFY_THREADS = 2
"""Threads checking password hashes: few, since each check is meant to cost CPU time."""
DEFAULT_COST = ("bcrypt", "12")
"""The dummy hash's cost when the file holds no usable hash (bcrypt's own default)."""

_BCRYPT_COST = re.compile(r"^\$2[aby]\$(\d{2})\$")
_ARGON2_COST = re.compile(r"^\$(argon2(?:id|i|d))\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$")


class Credentials:
    """``user → hash`` from a file, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._users: dict[str, str] = {}
        self._dummy = ""
        self._dummies: dict[tuple[str, ...], str] = {}
        """Dummy hash per cost, made once: an Argon2 one may take a while."""
        self._lock = threading.Lock()

    def _load(self) -> tuple[dict[str, str], str]:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            with self._lock:
                return {}, self._dummy_for(DEFAULT_COST)
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
                self._dummy = self._dummy_for(usual_cost(users.values()))
            return self._users, self._dummy

    def _dummy_for(self, cost: tuple[str, ...]) -> str:
        if cost not in self._dummies:
            self._dummies[cost] = dummy_hash(cost)
        return self._dummies[cost]

    @property
    def dummy(self) -> str:
        """The hash an unknown user's password is checked against (same algorithm and cost as the file's)."""
        return self._load()[1]

    def verify(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` matches its hash; unknown users cost the same."""
        users, dummy = self._load()
        hashed = users.get(user)
        matched = check_password(password, hashed if hashed is not None else dummy)
        return matched and hashed is not None


def hash_cost(hashed: str) -> tuple[str, ...] | None:
    """A hash's algorithm and cost parameters: ``("bcrypt", "12")``, ``("argon2id", "19", m, t, p)``."""
    if match := _BCRYPT_COST.match(hashed):
        return ("bcrypt", match.group(1))
    if match := _ARGON2_COST.match(hashed):
        return match.groups()
    return None


def usual_cost(hashes: Iterable[str]) -> tuple[str, ...]:
    """The cost most of ``hashes`` share (the first seen on a tie), or ``DEFAULT_COST`` without any.

    Argon2 counts only when ``argon2-cffi`` is installed: without it no Argon2 hash can be checked, and
    a dummy must be one that can.
    """
    costs = Counter(cost for cost in map(hash_cost, hashes) if cost is not None and _can_check(cost))
    return costs.most_common(1)[0][0] if costs else DEFAULT_COST


def dummy_hash(cost: tuple[str, ...]) -> str:
    """A hash of a random password with ``cost``."""
    secret = os.urandom(16)
    if cost[0] == "bcrypt":
        return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=int(cost[1]))).decode("ascii")
    import argon2  # optional: only needed for Argon2 hashes

    kind, _, memory, rounds, lanes = cost
    hasher = argon2.PasswordHasher(
        time_cost=int(rounds),
        memory_cost=int(memory),
        parallelism=int(lanes),
        type={"argon2id": argon2.Type.ID, "argon2i": argon2.Type.I, "argon2d": argon2.Type.D}[kind],
    )
    return str(hasher.hash(secret))


def _can_check(cost: tuple[str, ...]) -> bool:
    if cost[0] == "bcrypt":
        return 4 <= int(cost[1]) <= 31
    try:
        import argon2  # noqa: F401
    except ImportError:
        return False
    return True


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


class Throttle:
    """Per-address attempt count → wait before the password is checked: 0, 0.5 s, 1 s, 2 s... up to ``MAX_DELAY``.

    Every attempt counts as soon as it starts (``attempt``), so attempts made in parallel from one address
    wait longer and longer, and one abandoned during its wait still counts; a success forgets the address.
    """

    def __init__(self, base: float = 0.5) -> None:
        self.base = base
        self._attempts: dict[str, tuple[int, float]] = {}

    def attempt(self, client: str) -> float:
        """Count one attempt from ``client``; return how long it waits before its password is checked."""
        now = time.monotonic()
        count, last = self._attempts.get(client, (0, 0.0))
        if now - last > FORGET_AFTER:
            count = 0
        self._attempts[client] = (count + 1, now)
        if len(self._attempts) > 10000:
            oldest = min(self._attempts, key=lambda key: self._attempts[key][1])
            del self._attempts[oldest]
        return min(MAX_DELAY, self.base * 2 ** min(count - 1, 32)) if count else 0.0

    def succeeded(self, client: str) -> None:
        self._attempts.pop(client, None)


class Authenticator:
    """What every AUTH of one serving process shares: the penalty per client address (``throttle``), the
    credentials files read so far, and the threads that check hashes (started on first use)."""

    def __init__(self) -> None:
        self.throttle = Throttle()
        self._credentials: dict[Path, Credentials] = {}
        self._verifier: ThreadPoolExecutor | None = None

    def credentials(self, path: Path) -> Credentials:
        """The users of ``path``, read once and re-read when the file changes."""
        found = self._credentials.get(path)
        if found is None:
            found = self._credentials[path] = Credentials(path)
        return found

    @property
    def verifier(self) -> ThreadPoolExecutor:
        """The threads that check passwords."""
        if self._verifier is None:
            self._verifier = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="mda-auth")
        return self._verifier

    def close(self) -> None:
        """Stop the hash-checking threads (a check under way finishes first)."""
        if self._verifier is not None:
            self._verifier.shutdown(wait=True)
            self._verifier = None


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
