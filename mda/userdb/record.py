"""What a user source answers, and how a row of fields becomes it.

Every driver hands a mapping of field names to values (SQL columns, passwd-file fields, Dovecot extra
fields); ``record_from_row`` is the one place that turns it into settings, so every source reads
``quota``, ``mail=maildir:~/Maildir`` or ``quota_rule=*:storage=1G`` the same way. A value that cannot
be understood raises ``GarbageRow``: the source is then treated as failing (451), never as "no user".
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mda.enums import StorageFormat
from mda.units import parse_size


class UserdbError(Exception):
    """A source could not answer (down, slow, refused, or answered garbage): the recipient is deferred."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GarbageRow(UserdbError):
    """A source answered a row whose values mda cannot use."""


@dataclass(frozen=True)
class LookupKey:
    """One look-up, already normalised by the policy (local part folded, domain as an A-label)."""

    local: str
    domain: str
    detail: str = ""

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    def parameters(self) -> dict[str, str]:
        """The values of ``:address``, ``:local``, ``:domain``, ``:detail`` (bound, never formatted in)."""
        return {"address": self.address, "local": self.local, "domain": self.domain, "detail": self.detail}


@dataclass(frozen=True)
class UserRow:
    """A user's settings from a source; ``None`` falls back to the domain's, then ``storage:``."""

    path: str | None = None
    """An absolute path (not a template)."""
    format: StorageFormat | None = None
    quota: int | None = None
    quota_messages: int | None = None
    owner: str | None = None
    sieve: str | None = None
    create_folders: bool | None = None
    home: str | None = None
    uid: int | None = None
    gid: int | None = None
    root: str | None = None
    """The directory the mailbox path must stay below and that mda never creates above (``path_base``)."""


@dataclass(frozen=True)
class Record:
    """A source's answer for one address: a user, an alias (its targets), or both."""

    source: str
    user: UserRow | None = None
    aliases: tuple[str, ...] | None = None
    shown: str = ""
    """The row as ``mda resolve`` prints it (field=value, in the source's order)."""


_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}
_DOVECOT_UNITS = {"": 1024, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = int(str(value).strip()) if not isinstance(value, int) else value
    if number < 0:
        raise ValueError(f"negative: {value!r}")
    return number


def _system_id(kind: str, value: Any) -> int:
    """A uid or gid: a number, or a user or group name (Dovecot allows both)."""
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid if kind == "uid" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no such {'user' if kind == 'uid' else 'group'} {text!r}") from None


def _quota(value: Any) -> int | None:
    """Bytes, or a size with K/M/G; 0 means no quota, as Postfixadmin writes it."""
    size = parse_size(value if isinstance(value, int) else str(value).strip())
    return size or None


def parse_quota_rule(rule: str) -> tuple[int | None, int | None]:
    """(bytes, messages) from Dovecot's ``*:storage=1G`` / ``*:bytes=N`` / ``*:messages=N``.

    Only the ``*`` rule (the whole mailbox) is a quota mda enforces; Dovecot reads a plain
    ``storage=`` number as kilobytes and ``bytes=`` as bytes. ``0`` is no limit.
    """
    name, colon, limits = rule.partition(":")
    if not colon or name.strip() != "*":
        raise ValueError(f"only the * quota rule is understood, got {rule!r}")
    storage: int | None = None
    messages: int | None = None
    for part in limits.split(":"):
        key, equals, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not equals:
            if key in ("", "noenforcing", "ignore"):
                continue
            raise ValueError(f"unknown quota rule part {part!r}")
        if key in ("storage", "bytes"):
            match = re.fullmatch(r"(\d+)\s*([BbKkMmGgTt]?)", value)
            if not match:
                raise ValueError(f"bad {key} value {value!r}")
            unit = match.group(2).upper() if key == "storage" else (match.group(2).upper() or "B")
            storage = int(match.group(1)) * _DOVECOT_UNITS[unit] or None
        elif key == "messages":
            messages = _count(value) or None
        else:
            raise ValueError(f"unknown quota rule part {part!r}")
    return storage, messages


def parse_mail_location(value: str, home: str | None) -> tuple[StorageFormat, str]:
    """(format, path) from Dovecot's ``mail`` field: ``maildir:~/Maildir``, ``mbox:%h/mail/inbox``.

    Options after the path (``:LAYOUT=fs``, ``:INBOX=…``) are Dovecot's and ignored here.
    """
    kind, colon, rest = value.partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in list(StorageFormat):
        raise ValueError(f"only maildir: and mbox: mail locations are understood, got {value!r}")
    path = rest.split(":", 1)[0]
    if mbox_inbox := re.search(r":INBOX=([^:]+)", rest):
        path = mbox_inbox.group(1) if kind == StorageFormat.MBOX else path
    if path.startswith("~") or "%h" in path:
        if home is None:
            raise ValueError(f"mail location {value!r} uses the home directory, and the row has none")
        path = home + path[1:] if path.startswith("~") else path.replace("%h", home)
    return StorageFormat(kind), path


def _absolute(text: str, base: Path | None, what: str) -> str:
    """A path from a row: joined to ``path_base`` when relative; never ``..``, NUL or controls."""
    if not text or any(ord(c) < 32 for c in text):
        raise ValueError(f"{what}: empty or control characters")
    parts = Path(text).parts
    if ".." in parts:
        raise ValueError(f"{what}: contains ..")
    if not os.path.isabs(text):
        if base is None:
            raise ValueError(f"{what}: relative path {text!r} and no path_base")
        text = str(base / text)
    return os.path.normpath(text)


def record_from_row(
    source: str, row: Mapping[str, Any], *, path_base: Path | None = None, aliases: tuple[str, ...] | None = None
) -> Record:
    """A ``Record`` from a row's fields (unknown names are ignored; ``None`` values are unset)."""
    fields = {str(k).lower(): v for k, v in row.items() if v is not None and str(v) != ""}
    values: dict[str, Any] = {}
    try:
        home = _absolute(str(fields["home"]), path_base, "home") if "home" in fields else None
        values["home"] = home
        if "mail" in fields:
            values["format"], mail_path = parse_mail_location(str(fields["mail"]), home)
            values["path"] = _absolute(mail_path, path_base, "mail")
        if "path" in fields:
            values["path"] = _absolute(str(fields["path"]).rstrip("/") or "/", path_base, "path")
        if "format" in fields:
            kind = str(fields["format"]).strip().lower()
            if kind not in list(StorageFormat):
                raise ValueError(f"format must be maildir or mbox, got {kind!r}")
            values["format"] = StorageFormat(kind)
        if "quota_rule" in fields:
            values["quota"], values["quota_messages"] = parse_quota_rule(str(fields["quota_rule"]))
        if "quota" in fields:
            values["quota"] = _quota(fields["quota"])
        if "quota_messages" in fields:
            values["quota_messages"] = _count(fields["quota_messages"]) or None
        if "owner" in fields:
            values["owner"] = str(fields["owner"])
        if "sieve" in fields:
            values["sieve"] = _absolute(str(fields["sieve"]), path_base, "sieve")
        if "create_folders" in fields:
            values["create_folders"] = _bool(fields["create_folders"])
        for key in ("uid", "gid"):
            if key in fields:
                values[key] = _system_id(key, fields[key])
        if values.get("uid") == 0 or (values.get("uid") is None and values.get("gid") is not None):
            raise ValueError("uid 0 never receives mail, and a gid needs a uid")
        if values.get("uid") is not None and values.get("gid") is None:
            try:
                values["gid"] = pwd.getpwuid(values["uid"]).pw_gid
            except KeyError:
                raise ValueError(f"uid {values['uid']} without a gid, and no passwd entry to take one from") from None
    except (ValueError, TypeError) as error:
        raise GarbageRow(f"unusable row: {error}") from None
    path = values.get("path")
    if path_base is not None and path is not None and Path(path).is_relative_to(path_base):
        values["root"] = str(path_base)
    shown = " ".join(f"{k}={v}" for k, v in fields.items())
    return Record(source=source, user=UserRow(**values), aliases=aliases, shown=shown)


def split_goto(values: list[Any]) -> tuple[str, ...]:
    """Postfixadmin's ``goto``: one or more rows, each a comma-separated list of addresses."""
    targets: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise GarbageRow(f"alias target is not text: {type(value).__name__}")
        for item in value.split(","):
            item = item.strip()
            if item and item not in targets:
                targets.append(item)
    return tuple(targets)
