"""Users and groups named in the configuration (``user:``, ``socket_owner``, ``owner``) → numeric ids.

One parser for every place that takes ``user`` or ``user:group``, so the service user, a socket's owner
and a mailbox owner accept the same spellings: names, or numeric ids. ``uid:gid`` (both numeric) needs no
passwd entry, since a user database may hand out ids that exist only on the file server.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """A user and group resolved once, before anything is bound (a later look-up could see other data)."""

    name: str
    uid: int
    gid: int


class UnknownIdentity(LookupError):
    """A configured user or group does not exist."""


def _numeric(text: str) -> bool:
    return text.isascii() and text.isdigit()


def resolve_identity(spec: str) -> Identity:
    """``user``, ``user:group``, ``uid``, ``uid:gid`` → ids; the group defaults to the user's own."""
    user, _, group = spec.partition(":")
    if _numeric(user) and _numeric(group):
        return Identity(user, int(user), int(group))
    try:
        entry = pwd.getpwuid(int(user)) if _numeric(user) else pwd.getpwnam(user)
    except (KeyError, ValueError):  # ValueError: an embedded NUL
        raise UnknownIdentity(f"unknown user {user!r}") from None
    if not group:
        return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        gid = int(group) if _numeric(group) else grp.getgrnam(group).gr_gid
    except (KeyError, ValueError):
        raise UnknownIdentity(f"unknown group {group!r}") from None
    return Identity(entry.pw_name, entry.pw_uid, gid)


def names_root(spec: str) -> bool:
    """True when ``spec`` names root itself (``root``, ``0``, ``root:group``); an unknown user is not."""
    try:
        return resolve_identity(spec.partition(":")[0]).uid == 0
    except UnknownIdentity:
        return False
