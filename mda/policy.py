"""Recipient policy: an envelope address becomes the mailboxes it delivers to, or a refusal.

Order of look-ups for ``local+detail@domain`` (like Postfix's virtual and local delivery):
the domain must be ours (else relay denied); then the full address and then the address without its
detail are looked up as an alias, then as a user; then the domain's catch-all alias (``"@domain"``);
then ``any_user`` domains take every local part, and ``passwd`` domains every system user whose uid lies
between ``first_valid_uid`` and ``last_valid_uid`` and whose home exists and is theirs. Each step is
recorded so ``mda resolve`` can explain a decision.
"""

from __future__ import annotations

import functools
import os
import pwd
import stat
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mda import replies
from mda.addresses import Address, AddressError, fold_local, parse_mailbox, split_detail
from mda.config import Config, DomainConfig, MailboxSettings, effective_settings
from mda.enums import StorageFormat
from mda.identity import UnknownIdentity, resolve_identity
from mda.replies import Reply
from mda.storage.base import Mailbox
from mda.storage.folders import folder_for_detail
from mda.storage.fsutil import is_below
from mda.userdb import LookupKey, Userdb, UserdbError
from mda.userdb.record import Record

MAX_ALIAS_DEPTH = 20
"""Alias chains deeper than this are refused at delivery (cycles are already refused at load)."""


MAILBOX_CACHE_SIZE = 4096
"""Recipients' mailboxes a ``Policy`` keeps (one snapshot: a reload builds a new ``Policy``)."""

_MailboxKey = tuple[MailboxSettings, str, str, str | None, str | None, tuple[int, int] | None, Path | None]
"""What a mailbox is made of besides the snapshot: settings, domain, user, detail, home, system user, root."""


class AliasDepthError(RuntimeError):
    """An alias chain deeper than ``MAX_ALIAS_DEPTH``."""


@dataclass(frozen=True)
class Resolution:
    """The outcome for one RCPT: ``reply`` (``250 2.1.5`` when accepted) and where copies go."""

    reply: Reply
    address: str
    key: str
    """The address as compared (local part folded unless ``case_sensitive_local_part``, domain in lower
    case): two RCPTs with the same key are one recipient, stored once and answered alike."""
    mailboxes: tuple[Mailbox, ...] = ()
    steps: tuple[str, ...] = ()
    final_addresses: tuple[str, ...] = ()
    """The user addresses the RCPT resolved to (after aliases): loop checks look for these too."""

    @property
    def accepted(self) -> bool:
        return self.reply.is_success


class HomeUnavailable(RuntimeError):
    """A system user's home that is missing or not theirs: mda never creates one, and answers
    ``451 4.3.0`` (an unmounted or half-created home may be back soon, as Postfix local defers)."""


def _check_home(entry: pwd.struct_passwd) -> None:
    """The home must be an existing directory owned by the user (a ``stat``, no file is opened)."""
    try:
        info = os.stat(entry.pw_dir)
    except OSError as error:
        raise HomeUnavailable(f"home {entry.pw_dir}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != entry.pw_uid:
        raise HomeUnavailable(f"home {entry.pw_dir} is not a directory owned by uid {entry.pw_uid}")


class UnsafeValue(ValueError):
    """A value that a path template cannot safely use (empty, ``.``, ``..``, ``/``, NUL, controls)."""


_UNSAFE_CHARS = frozenset('/"\\')
"""``/`` would change directory; quotes and backslashes only appear in a quoted local part (RFC 5321
§4.1.2), which no mailbox name should inherit: such an address may still reach a user through an alias."""


def check_template_value(value: str) -> str:
    """Refuse a value that could lead a path template out of its directory (docs/configuration.md, "Path templates")."""
    if value in ("", ".", "..") or any(c in _UNSAFE_CHARS or ord(c) < 32 or ord(c) == 127 for c in value):
        raise UnsafeValue(value)
    return value


def template_root(template: str) -> Path:
    """The fixed directory in front of the first ``{field}``: nothing above it is ever created."""
    prefix = template.split("{", 1)[0]
    fixed = prefix if prefix.endswith("/") else os.path.dirname(prefix)
    return _absolute_root(fixed) if os.path.isabs(fixed) else Path(fixed or ".").absolute()


@functools.lru_cache(maxsize=256)
def _absolute_root(fixed: str) -> Path:
    return Path(fixed)


@functools.lru_cache(maxsize=256)
def _template_fields(template: str) -> frozenset[str]:
    """The ``{field}`` names a template uses (a few templates are rendered for every recipient)."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def render_template(template: str, values: dict[str, str], *, home: str | None = None) -> Path:
    """Fill a path template after checking each value used; the result stays below its root.

    ``home`` is a trusted directory (a system user's home from the passwd database): it may contain
    ``/`` and becomes the root the result must stay below. Every other value comes from an address.
    """
    if template.startswith("/") or (home is not None and template.startswith("{home}")):
        return _render_absolute(template, tuple(values.items()), home)
    return _render(template, values, home)


@functools.lru_cache(maxsize=4096)
def _render_absolute(template: str, items: tuple[tuple[str, str], ...], home: str | None) -> Path:
    """:func:`_render` of a template whose result does not depend on the working directory, kept:
    every recipient renders its mailbox path and its Sieve script path, and the same users receive
    most mail. A refused value raises again every time (exceptions are not kept)."""
    return _render(template, dict(items), home)


def _render(template: str, values: dict[str, str], home: str | None) -> Path:
    for name in _template_fields(template):
        if name == "home" and home is not None:
            continue
        check_template_value(values.get(name, ""))
    if home is not None:
        if not os.path.isabs(home):
            raise UnsafeValue(home)
        values = {**values, "home": home}
    path = Path(template.format(**values)).absolute()
    root = Path(home) if home is not None and "{home}" in template else template_root(template)
    if not is_below(path, root):
        raise UnsafeValue(str(path))
    return path


def renders_anywhere(path_template: str, sieve_template: str | None, home: str | None) -> bool:
    """:func:`locate` gives the same answer (or refusal) whatever the working directory: every template
    starts at ``/`` or at a given ``home``, or, for the Sieve template, at the mailbox's absolute parent."""
    derived_home = home is None and "{home}" not in path_template and path_template.startswith("/")
    return _is_absolute(path_template, bool(home)) and (
        sieve_template is None or _is_absolute(sieve_template, bool(home) or derived_home)
    )


def _is_absolute(template: str, has_home: bool) -> bool:
    return template.startswith("/") or (has_home and template.startswith("{home}"))


def locate(
    path_template: str, sieve_template: str | None, values: tuple[str, str, str], home: str | None
) -> tuple[Path, Path | None, Path]:
    """A mailbox's path, its Sieve script's path and the root above which nothing is created, from
    ``(user, domain, detail)`` and a trusted ``home``."""
    user, domain, detail = values
    fields = {"user": user, "domain": domain, "detail": detail}
    if home is None and "{home}" not in path_template:
        # No home in the path: a Sieve template's {home} is the mailbox's parent directory.
        path = render_template(path_template, fields)
        home = str(path.parent)
    else:
        path = render_template(path_template, fields, home=home or None)
    sieve = render_template(sieve_template, fields, home=home or None) if sieve_template else None
    root = Path(home) if home and "{home}" in path_template else template_root(path_template)
    return path, sieve, root


_NO_SETTINGS = MailboxSettings()
"""A user without settings of their own (``any_user``): one object, hashed alike for every recipient."""


@dataclass
class _Walk:
    """Mutable state of one resolution: steps for ``mda resolve``, mailboxes found, alias depth."""

    steps: list[str] = field(default_factory=list)
    mailboxes: dict[tuple[str, str, str | None], Mailbox] = field(default_factory=dict)
    final_addresses: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


class Policy:
    """Resolves recipients against one ``Config`` snapshot (a reload builds a new ``Policy``)."""

    def __init__(
        self,
        config: Config,
        *,
        passwd_lookup: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
    ) -> None:
        self.config = config
        self.userdb = Userdb(config.userdb) if config.userdb.sources else None
        self._passwd_lookup = passwd_lookup
        self._case_sensitive = config.case_sensitive_local_part
        self._users = {self._fold(a): s for a, s in config.users.items()}
        self._aliases = {self._fold(a): t for a, t in config.aliases.items()}
        self._as_root = os.geteuid() == 0
        self._owners: dict[str, tuple[int, int]] = {}
        self._mailboxes: dict[_MailboxKey, tuple[Mailbox, str]] = {}

    def _fold(self, address: str) -> str:
        local, at, domain = address.rpartition("@")
        return f"{fold_local(local, self._case_sensitive)}{at}{domain}" if at else address

    def resolve(self, address: Address, *, smtputf8: bool = False) -> Resolution:
        """Where a RCPT's copies go; never raises for any input (refusals are replies)."""
        walk = _Walk()
        text = str(address)
        key = self._fold(text)
        if not address.is_ascii and not smtputf8:
            return Resolution(replies.NEEDS_SMTPUTF8, text, key, steps=("non-ASCII address without SMTPUTF8",))
        domain = self.config.domains.get(address.domain)
        if domain is None:
            walk.steps.append(f"domain {address.domain}: not ours")
            return Resolution(replies.RELAY_DENIED, text, key, steps=tuple(walk.steps))
        walk.steps.append(f"domain {address.domain}: ours")
        try:
            found = self._resolve_in_domain(address, domain, walk, depth=0)
        except UnsafeValue:
            walk.steps.append("unsafe value for a path template")
            return Resolution(replies.UNSAFE_ADDRESS, text, key, steps=tuple(walk.steps))
        except HomeUnavailable as error:
            walk.steps.append(f"{error}: try again later")
            return Resolution(replies.LOCAL_ERROR, text, key, steps=tuple(walk.steps))
        except AliasDepthError:
            walk.steps.append("alias chain too deep")
            return Resolution(replies.UNKNOWN_USER, text, key, steps=tuple(walk.steps))
        except UserdbError as error:
            walk.steps.append(f"userdb: could not answer: {error.reason}")
            return Resolution(replies.LOOKUP_FAILED, text, key, steps=tuple(walk.steps))
        if not found:
            return Resolution(replies.UNKNOWN_USER, text, key, steps=tuple(walk.steps))
        return Resolution(
            replies.RECIPIENT_OK,
            text,
            key,
            mailboxes=tuple(walk.mailboxes.values()),
            steps=tuple(walk.steps),
            final_addresses=tuple(walk.final_addresses),
        )

    def _resolve_in_domain(self, address: Address, domain: DomainConfig, walk: _Walk, depth: int) -> bool:
        local = fold_local(address.local, self._case_sensitive)
        base, detail = split_detail(local, self.config.recipient_delimiter)
        if detail is not None:
            walk.steps.append(f"subaddress: user {base}, detail {detail!r}")
        candidates = [f"{local}@{domain.name}"]
        if detail is not None:
            candidates.append(f"{base}@{domain.name}")
        for candidate in candidates:
            if candidate in self._aliases:
                walk.steps.append(f"alias {candidate} -> {', '.join(self._aliases[candidate])}")
                return self._expand(self._aliases[candidate], walk, depth)
            if candidate in self._users:
                walk.steps.append(f"user {candidate}")
                self._add(walk, base, detail, domain, self._users[candidate])
                return True
        if self.userdb is not None:
            record = self.userdb.lookup(LookupKey(base, domain.name, detail or ""))
            if record is not None:
                return self._add_record(record, walk, base, detail, domain, depth)
            walk.steps.append(f"userdb: no {base}@{domain.name}")
        catch_all = f"@{domain.name}"
        if catch_all in self._aliases:
            walk.steps.append(f"catch-all {catch_all} -> {', '.join(self._aliases[catch_all])}")
            return self._expand(self._aliases[catch_all], walk, depth)
        if domain.any_user:
            walk.steps.append(f"any_user domain: mailbox {base}")
            self._add(walk, base, detail, domain, _NO_SETTINGS)
            return True
        if domain.passwd:
            return self._add_passwd_user(walk, base, detail, domain)
        walk.steps.append(f"no user {base}@{domain.name}")
        return False

    def _expand(self, targets: tuple[str, ...], walk: _Walk, depth: int) -> bool:
        if depth >= MAX_ALIAS_DEPTH:
            raise AliasDepthError
        found = False
        for target in targets:
            if target in walk.seen:
                continue
            walk.seen.add(target)
            try:
                address = parse_mailbox(target)
            except AddressError:
                continue
            domain = self.config.domains.get(address.domain)
            if domain is None:
                walk.steps.append(f"alias target {target}: domain not ours, skipped")
                continue
            found = self._resolve_in_domain(address, domain, walk, depth + 1) or found
        return found

    def _add_record(
        self, record: Record, walk: _Walk, base: str, detail: str | None, domain: DomainConfig, depth: int
    ) -> bool:
        """A ``userdb`` answer: a mailbox, an alias (Postfixadmin ``goto``, which may name the address
        itself: deliver to its mailbox too), or both."""
        address = f"{base}@{domain.name}"
        walk.steps.append(f"userdb {record.source}: {address}: {record.shown}")
        if record.aliases is None:
            return self._add_userdb_user(record, walk, base, detail, domain)
        walk.seen.add(address)
        found = False
        for target in record.aliases:
            try:
                parsed = parse_mailbox(target)
            except AddressError:
                walk.steps.append(f"alias target {target!r}: not an address, skipped")
                continue
            if self._fold(f"{parsed.local}@{parsed.domain}") == address:
                found = self._add_userdb_user(record, walk, base, detail, domain) or found
            else:
                found = self._expand((target,), walk, depth) or found
        return found

    def _add_userdb_user(
        self, record: Record, walk: _Walk, base: str, detail: str | None, domain: DomainConfig
    ) -> bool:
        row = record.user
        if row is None:
            walk.steps.append("alias names itself, and the source has no mailbox row for it")
            return False
        owner = row.owner or (f"{row.uid}:{row.gid}" if row.uid is not None else None)
        try:
            self._owner(owner)
        except UnknownIdentity:
            raise UserdbError(f"{record.source}: owner {owner!r} is not a known user or group") from None
        settings = MailboxSettings(
            path=row.path.replace("{", "{{").replace("}", "}}") if row.path else None,
            format=row.format,
            quota=row.quota,
            quota_messages=row.quota_messages,
            sieve=row.sieve.replace("{", "{{").replace("}", "}}") if row.sieve else None,
            owner=owner,
            create_folders=row.create_folders,
        )
        root = row.root or (row.home if row.path and row.home and row.path.startswith(row.home + "/") else None)
        self._add(walk, base, detail, domain, settings, home=row.home, root=Path(root) if root else None)
        return True

    def _add_passwd_user(self, walk: _Walk, base: str, detail: str | None, domain: DomainConfig) -> bool:
        try:
            check_template_value(base)
            entry = self._passwd_lookup(base)
        except (KeyError, UnsafeValue):
            walk.steps.append(f"no system user {base}")
            return False
        if entry.pw_uid == 0:
            # Like Postfix local(8), never write into root's files with root's authority.
            walk.steps.append(f"system user {base} is uid 0: not a mail recipient")
            return False
        if entry.pw_uid < domain.first_valid_uid or (
            domain.last_valid_uid is not None and entry.pw_uid > domain.last_valid_uid
        ):
            # A system account (daemon, www-data, nobody): unknown, as for Dovecot's first_valid_uid.
            walk.steps.append(f"system user {base} has uid {entry.pw_uid}, outside the valid uids: not a recipient")
            return False
        walk.steps.append(f"system user {base}: home {entry.pw_dir}")
        _check_home(entry)
        settings = MailboxSettings(path="{home}/Maildir", owner=f"{entry.pw_uid}:{entry.pw_gid}")
        self._add(walk, base, detail, domain, settings, home=entry.pw_dir, system_user=(entry.pw_uid, entry.pw_gid))
        return True

    def _add(
        self,
        walk: _Walk,
        user: str,
        detail: str | None,
        domain: DomainConfig,
        user_settings: MailboxSettings,
        home: str | None = None,
        system_user: tuple[int, int] | None = None,
        root: Path | None = None,
    ) -> None:
        key = (user_settings, domain.name, user, detail, home, system_user, root)
        found = self._mailboxes.get(key)
        if found is None:
            found = self._mailbox(key, domain)
        mailbox, step = found
        walk.steps.append(step)
        walk.mailboxes.setdefault(mailbox.key, mailbox)
        walk.final_addresses.append(f"{user}@{domain.name}")

    def _mailbox(self, key: _MailboxKey, domain: DomainConfig) -> tuple[Mailbox, str]:
        """The mailbox of ``_add`` and its step for ``mda resolve``; kept for the next resolution unless
        a template depends on the working directory (nothing else it reads changes within a snapshot)."""
        user_settings, _, user, detail, home, system_user, root = key
        settings = effective_settings(user_settings, domain.mailbox, self.config.storage.mailbox)
        assert settings.path is not None and settings.format is not None
        sieve_template = settings.sieve or (self.config.sieve.path if self.config.sieve else None)
        path, sieve, default_root = locate(settings.path, sieve_template, (user, domain.name, detail or ""), home)
        folder = folder_for_detail(detail) if detail and settings.format == StorageFormat.MAILDIR else None
        mailbox = Mailbox(
            format=settings.format,
            path=path,
            folder=folder,
            create_folder=bool(settings.create_folders),
            max_folders=self.config.storage.max_folders,
            quota_bytes=settings.quota,
            quota_messages=settings.quota_messages,
            quota_full_tempfail=self.config.storage.quota_full_tempfail,
            owner=self._owner(settings.owner),
            fsync=self.config.storage.fsync,
            lock_timeout=self.config.storage.lock_timeout,
            root=root or default_root,
            sieve=sieve,
            system_user=system_user,
        )
        step = f"mailbox {mailbox.format} {mailbox.path}" + (f" folder .{folder}" if folder else " (INBOX)")
        if renders_anywhere(settings.path, sieve_template, home):
            if len(self._mailboxes) >= MAILBOX_CACHE_SIZE:  # a flood of distinct recipients: start afresh
                self._mailboxes.clear()
            self._mailboxes[key] = (mailbox, step)
        return mailbox, step

    def _owner(self, owner: str | None) -> tuple[int, int] | None:
        """(uid, gid) for ``user`` or ``user:group`` (or numeric ids), only when running as root."""
        if owner is None or not self._as_root:
            return None
        if owner not in self._owners:
            identity = resolve_identity(owner)
            self._owners[owner] = (identity.uid, identity.gid)
        return self._owners[owner]
