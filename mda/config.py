"""The configuration: YAML in, frozen dataclasses out, every key and default declared once.

The reference is ``docs/configuration.md`` (tests/docs checks it). Unknown keys are errors naming file, line and
key, because a typo in a mail server's configuration must never pass silently. Nothing here is read
again at delivery time: a loaded ``Config`` is immutable and a reload builds a new one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mda.sieve.budget import DEFAULT_WORK_LIMIT
from mda.statestore.settings import StateSettings, parse_state, state_document
from mda.units import parse_duration, parse_size
from mda.userdb.settings import UserdbSettings, parse_cache, parse_sources, source_document
from mda.yamlsource import ConfigError, Document, PathKey, format_path, load_file, load_text

if TYPE_CHECKING:
    from mda.sieve.settings import HeaderSpec, ScoreTest, SieveSettings

T = TypeVar("T")

STORAGE_FORMATS = ("maildir", "mbox")
PROTOCOLS = ("lmtp", "smtp", "policy")
"""``policy``: Postfix's policy delegation protocol (``check_policy_service``, mda/policyservice.py)."""
TLS_MODES = ("starttls", "implicit")
BARE_NEWLINE_MODES = ("reject", "normalize")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEMPLATE_FIELDS = ("user", "domain", "detail", "home")
DEFAULT_FIRST_VALID_UID = 1000
"""Below it are system accounts (Debian's and Fedora's ``UID_MIN``); Dovecot's own default is 500."""
MAX_UID = 2**32 - 2

DEFAULT_CONFIG_YAML = """\
listeners:
  - protocol: lmtp
    bind: 127.0.0.1:2424
  - protocol: smtp
    bind: 127.0.0.1:2525
domains:
  localhost:
    any_user: true
storage:
  format: maildir
  path: ./mail/{domain}/{user}/Maildir
  fsync: true
metrics:
  bind: 127.0.0.1:9464
"""
"""The embedded default: what ``mda serve`` runs with no ``--config`` (hostname from the machine)."""


SMTP_HARD_ERROR_LIMIT = 20
"""Postfix ``smtpd_hard_error_limit``."""
SMTP_JUNK_COMMAND_LIMIT = 100
"""Postfix ``smtpd_junk_command_limit``."""
MIN_HEADER_SIZE = 1024
"""A header section limit below this would refuse ordinary mail (a few ``Received`` fields)."""


@dataclass(frozen=True)
class Limits:
    """Per-session limits; each listener may override any of them."""

    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 1000
    max_connections: int = 1000
    max_connections_per_client: int = 100
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: at least 5 minutes per command
    data_timeout: float = 600.0
    spool_memory: int = 64 * 1024 * 1024
    """Process-wide, top level only: bytes all DATA spools of one process may hold in memory together;
    beyond, spools spill to files. With the default, 1000 sessions in DATA stay within 256 MiB RSS."""
    max_header_size: int = 100 * 1024
    """Postfix's ``header_size_limit`` (102400): a larger header section is refused with ``552 5.3.4``."""
    hard_error_limit: int | None = None
    """Error replies allowed in a session that has not delivered a message; None: the protocol's default
    (``error_limits``); 0: no limit."""
    junk_command_limit: int | None = None
    """NOOP, RSET, VRFY, HELP, LHLO/EHLO/HELO and ``BDAT 0`` allowed before each counts as an error."""

    def error_limits(self, protocol: str) -> tuple[int, int]:
        """``(hard_error_limit, junk_command_limit)`` for a listener of ``protocol`` (0: no limit).

        SMTP takes Postfix's ``smtpd_hard_error_limit`` (20) and ``smtpd_junk_command_limit`` (100). An LMTP
        client is an MTA handing over mail it already accepted: one transaction may legitimately carry
        ``max_recipients`` refused RCPTs, so LMTP adds ``max_recipients`` to both.
        """
        extra = self.max_recipients if protocol == "lmtp" else 0
        hard = SMTP_HARD_ERROR_LIMIT + extra if self.hard_error_limit is None else self.hard_error_limit
        junk = SMTP_JUNK_COMMAND_LIMIT + extra if self.junk_command_limit is None else self.junk_command_limit
        return hard, junk


@dataclass(frozen=True)
class BindAddress:
    """Where a listener listens: a TCP host and port (0 = any free port) or a UNIX socket path."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsSettings:
    cert: Path
    key: Path
    mode: str = "starttls"


@dataclass(frozen=True)
class AuthSettings:
    required: bool = False
    users_file: Path | None = None


@dataclass(frozen=True)
class ListenerConfig:
    protocol: str
    bind: BindAddress
    socket_mode: int | None = None
    socket_owner: str | None = None
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls: TlsSettings | None = None
    require_tls: bool = False
    auth: AuthSettings | None = None
    proxy_protocol: bool = False
    proxy_trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """Peers allowed to send a PROXY header; empty trusts no one (README, "Protocol")."""
    success_dsn: bool = True
    """False: ``DSN`` is not announced and no "delivered" report is sent from this listener."""
    limits: Limits = field(default_factory=Limits)

    @property
    def label(self) -> str:
        """Short name for logs and metrics labels (never client data)."""
        return f"{self.protocol} {self.bind}"

    def allows(self, client: str) -> bool:
        """``allow`` admits ``client`` (an empty list admits all; UNIX-socket clients have no address).

        A trusted proxy speaking for itself (a PROXY health check without a client address) is admitted
        too: it could name any allowed client anyway, and a health check refused would take it out.
        """
        if not self.allow or not client or _contains(self.allow, client):
            return True
        return self.proxy_protocol and self.trusts_proxy(client)

    def trusts_proxy(self, peer: str) -> bool:
        """``peer`` may send a PROXY header: it is in ``proxy_trusted`` (an empty list trusts no one)."""
        return _contains(self.proxy_trusted, peer)


def _contains(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network], client: str) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)


@dataclass(frozen=True)
class MailboxSettings:
    """Settings a user, a domain or the global storage section may set; ``None`` means inherit."""

    path: str | None = None
    format: str | None = None
    quota: int | None = None
    quota_messages: int | None = None
    sieve: str | None = None
    owner: str | None = None
    create_folders: bool | None = None

    def over(self, fallback: MailboxSettings) -> MailboxSettings:
        """These settings with every unset value taken from ``fallback``."""
        return MailboxSettings(
            **{
                f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(fallback, f.name)
                for f in fields(self)
            }
        )


@dataclass(frozen=True)
class DomainConfig:
    name: str
    any_user: bool = False
    passwd: bool = False
    first_valid_uid: int = DEFAULT_FIRST_VALID_UID
    """``passwd`` domains: system users below this uid (daemons, ``www-data``) are not recipients."""
    last_valid_uid: int | None = None
    """``passwd`` domains: nor above this uid (None: no upper bound)."""
    mailbox: MailboxSettings = field(default_factory=MailboxSettings)


@dataclass(frozen=True)
class StorageConfig:
    format: str = "maildir"
    path: str = "/var/vmail/{domain}/{user}/Maildir"
    fsync: bool = True
    owner: str | None = None
    create_folders: bool = False
    max_folders: int = 100
    """With ``create_folders``: no folder is created in a Maildir that already has this many (INBOX instead)."""
    max_new_folders: int = 5
    """With ``create_folders``: at most this many folders created for one message (the rest: INBOX)."""
    lock_timeout: float = 30.0
    quota_full_tempfail: bool = False
    quota: int | None = None
    quota_messages: int | None = None

    @property
    def mailbox(self) -> MailboxSettings:
        """The global defaults as the last fallback of per-user settings."""
        return MailboxSettings(
            path=self.path,
            format=self.format,
            quota=self.quota,
            quota_messages=self.quota_messages,
            owner=self.owner,
            create_folders=self.create_folders,
        )


@dataclass(frozen=True)
class MetricsConfig:
    bind: BindAddress


@dataclass(frozen=True)
class SubmissionConfig:
    """Outbound path for Sieve redirect/vacation and DSNs: SMTP host:port, or a sendmail command."""

    host: str | None = None
    port: int = 25
    sendmail: tuple[str, ...] = ()


@dataclass(frozen=True)
class SieveConfig:
    path: str | None = "{home}/active.sieve"
    before: tuple[Path, ...] = ()
    after: tuple[Path, ...] = ()
    work_limit: int = DEFAULT_WORK_LIMIT
    """Work units one recipient's scripts may spend (about one per byte compared); beyond, a runtime
    error and the implicit keep (mda.sieve.budget)."""
    settings: SieveSettings | None = None
    """spamtest/virustest sources and the include :global directory (mda.sieve.settings); None: none."""


@dataclass(frozen=True)
class Config:
    """One complete, validated configuration. Immutable: a reload builds a new one and swaps it in."""

    hostname: str
    listeners: tuple[ListenerConfig, ...]
    domains: Mapping[str, DomainConfig]
    storage: StorageConfig
    users: Mapping[str, MailboxSettings]
    aliases: Mapping[str, tuple[str, ...]]
    users_file: Path | None = None
    file_users: frozenset[str] = frozenset()
    """The addresses of ``users`` that come from ``users_file`` (``check-config --print`` leaves them there)."""
    recipient_delimiter: str = "+"
    case_sensitive_local_part: bool = False
    max_hops: int = 50
    duplicate_window: float = 0.0
    free_space_reserve: str = "1%"
    bare_newline: str = "reject"
    limits: Limits = field(default_factory=Limits)
    metrics: MetricsConfig | None = None
    log_format: str = "text"
    log_level: str = "info"
    workers: int = 1
    shutdown_timeout: float = 30.0
    user: str | None = None
    state_dir: Path | None = None
    state: StateSettings = field(default_factory=StateSettings)
    submission: SubmissionConfig | None = None
    dsn_size_limit: int = 50_000
    """The most of the original message a success DSN returns (Postfix's ``bounce_size_limit``)."""
    sieve: SieveConfig | None = None
    userdb: UserdbSettings = field(default_factory=UserdbSettings)
    """More user sources, consulted after ``users`` (README "User databases")."""
    source: Path | None = None
    digest: str = ""


# --- parsing helpers ------------------------------------------------------------------------------


class _Section:
    """One mapping of the document: typed reads by key, and unknown keys refused at the end."""

    def __init__(self, doc: Document, path: PathKey, value: Any) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise doc.error(path, f"expected a mapping, got {_kind(value)}")
        self.doc = doc
        self.path = path
        self.values: dict[Any, Any] = value
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        self.used.add(key)
        if key not in self.values:
            return default
        return self.convert(key, convert)

    def convert(self, key: str, convert: Callable[[Any], T]) -> T:
        self.used.add(key)
        try:
            return convert(self.values[key])
        except ConfigError:
            raise
        except (ValueError, TypeError) as error:
            raise self.doc.error((*self.path, key), str(error)) from None

    def sub(self, key: str) -> _Section:
        self.used.add(key)
        return _Section(self.doc, (*self.path, key), self.values.get(key))

    def finish(self) -> None:
        for key in self.values:
            if not isinstance(key, str):
                raise self.doc.error(self.path, f"keys must be strings, got {key!r}")
            if key not in self.used:
                raise self.doc.error((*self.path, key), "unknown key")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    if any(ord(c) < 32 for c in value):
        raise ValueError("control characters are not allowed")
    return value


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return convert


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return str(value)

    return convert


def _hostname(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text):
        raise ValueError(f"not a valid host name: {text!r}")
    return text


def parse_bind(value: Any) -> BindAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/path`` (docs/configuration.md, ``listeners[].bind``)."""
    text = _str(value) if not isinstance(value, int) else str(value)
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/") and not path.startswith("."):
            raise ValueError("a UNIX socket path must be absolute or start with ./")
        return BindAddress(path=path)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not match:
        raise ValueError(f"expected HOST:PORT, [IPV6]:PORT or unix:/path, got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return BindAddress(host=host, port=port)


def _socket_mode(value: Any) -> int:
    text = str(value) if isinstance(value, str) else None
    if text is None or not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError(f'expected an octal mode in quotes like "0660", got {value!r}')
    return int(text, 8)


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise ValueError('expected a list of networks like [127.0.0.0/8, "::1"]')
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"not a network: {item!r}") from None
    return tuple(networks)


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_str(value),)
    if not isinstance(value, list) or not value:
        raise ValueError("expected a string or a non-empty list of strings")
    return tuple(_str(item) for item in value)


def _reserve(value: Any) -> str:
    text = str(value).strip()
    if text.endswith("%"):
        number = float(text[:-1])
        if not 0 <= number < 100:
            raise ValueError("a percentage must be between 0% and 100%")
        return text
    parse_size(text)
    return text


def _template(value: Any) -> str:
    text = _str(value)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise ValueError(f"bad path template: {error}") from None
    unknown = names - set(TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown template field {{{sorted(unknown)[0]}}}; known: {', '.join(TEMPLATE_FIELDS)}")
    return text


def _header_size(value: Any) -> int:
    size = parse_size(value)
    if size < MIN_HEADER_SIZE:
        raise ValueError(f"must be at least {MIN_HEADER_SIZE} bytes")
    return size


PROCESS_LIMITS = ("spool_memory",)
"""Keys of ``limits`` that concern the whole process, not a session: not allowed per listener."""


def _limits(section: _Section, base: Limits, *, listener: bool = False) -> Limits:
    for key in PROCESS_LIMITS:
        if listener and section.has(key):
            raise section.doc.error(
                (*section.path, key), "applies to the whole process: set it under the top-level limits"
            )
    limits = Limits(
        max_message_size=section.get("max_message_size", parse_size, base.max_message_size),
        max_recipients=section.get("max_recipients", _int(1, 1_000_000), base.max_recipients),
        max_connections=section.get("max_connections", _int(1, 1_000_000), base.max_connections),
        max_connections_per_client=section.get(
            "max_connections_per_client", _int(1, 1_000_000), base.max_connections_per_client
        ),
        command_timeout=section.get("command_timeout", parse_duration, base.command_timeout),
        data_timeout=section.get("data_timeout", parse_duration, base.data_timeout),
        spool_memory=section.get("spool_memory", parse_size, base.spool_memory),
        max_header_size=section.get("max_header_size", _header_size, base.max_header_size),
        hard_error_limit=section.get("hard_error_limit", _int(0, 1_000_000), base.hard_error_limit),
        junk_command_limit=section.get("junk_command_limit", _int(0, 1_000_000), base.junk_command_limit),
    )
    section.finish()
    return limits


def _mailbox_settings(section: _Section, *, allow: tuple[str, ...]) -> MailboxSettings:
    converters: dict[str, Callable[[Any], Any]] = {
        "path": _template,
        "format": _choice(STORAGE_FORMATS),
        "quota": parse_size,
        "quota_messages": _int(0, 2**62),
        "sieve": _template,
        "owner": _str,
        "create_folders": _bool,
    }
    values = {key: section.get(key, converters[key], None) for key in allow}
    return MailboxSettings(**values)


_USER_KEYS = ("path", "format", "quota", "quota_messages", "sieve", "owner", "create_folders")
_DOMAIN_MAILBOX_KEYS = ("path", "format", "quota", "quota_messages", "owner", "create_folders")


def _address_key(doc: Document, path: PathKey, value: Any, *, allow_catch_all: bool = False) -> str:
    """Normalise an address used as a key or alias target: lower-cased domain, checked syntax."""
    from mda.addresses import AddressError, normalize_config_address

    if not isinstance(value, str):
        raise doc.error(path, f"expected an address, got {value!r}")
    try:
        return normalize_config_address(value, allow_catch_all=allow_catch_all)
    except AddressError as error:
        raise doc.error(path, str(error)) from None


_Origins = dict[str, tuple[Document, PathKey]]
"""Where each address key was written (document and path), for errors that name two lines."""


def _users(
    doc: Document, path: PathKey, value: Any, domains: Mapping[str, DomainConfig], origins: _Origins
) -> dict[str, MailboxSettings]:
    section = _Section(doc, path, value)
    users: dict[str, MailboxSettings] = {}
    for raw in list(section.values):
        key_path = (*path, str(raw))
        address = _address_key(doc, key_path, raw)
        if address in users:
            raise doc.error(key_path, "the same user appears twice (addresses compare case-insensitively)")
        origins.setdefault(address, (doc, key_path))
        domain = address.rpartition("@")[2]
        if domain not in domains:
            raise doc.error(key_path, f"domain {domain} is not listed under domains")
        sub = section.sub(str(raw))
        users[address] = _mailbox_settings(sub, allow=_USER_KEYS)
        sub.finish()
    return users


def _domains(doc: Document, section: _Section) -> dict[str, DomainConfig]:
    from mda.addresses import AddressError, normalize_domain

    raw = section.values.get("domains")
    section.used.add("domains")
    path: PathKey = ("domains",)
    entries: list[tuple[Any, Any, PathKey]]
    if isinstance(raw, list):
        entries = [(name, None, (*path, i)) for i, name in enumerate(raw)]
    elif isinstance(raw, dict):
        entries = [(name, settings, (*path, str(name))) for name, settings in raw.items()]
    elif raw is None:
        raise doc.error(path if "domains" in section.values else (), "domains: at least one domain is required")
    else:
        raise doc.error(path, "expected a list of domain names or a mapping of name to settings")
    domains: dict[str, DomainConfig] = {}
    for name, settings, entry_path in entries:
        if not isinstance(name, str):
            raise doc.error(entry_path, f"expected a domain name, got {name!r}")
        try:
            ascii_name = normalize_domain(name)
        except AddressError as error:
            raise doc.error(entry_path, str(error)) from None
        if ascii_name in domains:
            raise doc.error(entry_path, f"domain {name} appears twice")
        sub = _Section(doc, entry_path, settings)
        passwd = sub.get("passwd", _bool, False)
        for key in ("first_valid_uid", "last_valid_uid"):
            if sub.has(key) and not passwd:
                raise doc.error((*entry_path, key), f"{key} needs passwd: true")
        first_uid = sub.get("first_valid_uid", _int(0, MAX_UID), DEFAULT_FIRST_VALID_UID)
        last_uid = sub.get("last_valid_uid", _int(0, MAX_UID), None)
        if last_uid is not None and last_uid < first_uid:
            raise doc.error((*entry_path, "last_valid_uid"), "last_valid_uid is below first_valid_uid")
        domains[ascii_name] = DomainConfig(
            name=ascii_name,
            any_user=sub.get("any_user", _bool, False),
            passwd=passwd,
            first_valid_uid=first_uid,
            last_valid_uid=last_uid,
            mailbox=_mailbox_settings(sub, allow=_DOMAIN_MAILBOX_KEYS),
        )
        sub.finish()
    if not domains:
        raise doc.error(path, "at least one domain is required")
    return domains


def _aliases(doc: Document, value: Any, raw_keys: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Aliases with normalised keys and targets; ``raw_keys`` maps each key back to its spelling in the
    file, so later checks (cycles, foreign targets) can name the line."""
    path: PathKey = ("aliases",)
    section = _Section(doc, path, value)
    aliases: dict[str, tuple[str, ...]] = {}
    for raw, targets in section.values.items():
        key_path = (*path, str(raw))
        source = _address_key(doc, key_path, raw, allow_catch_all=True)
        if source in aliases:
            raise doc.error(key_path, "the same alias appears twice")
        raw_keys[source] = str(raw)
        target_list = targets if isinstance(targets, list) else [targets]
        if not target_list:
            raise doc.error(key_path, "an alias needs at least one target")
        aliases[source] = tuple(
            _address_key(doc, (*key_path, i) if isinstance(targets, list) else key_path, t)
            for i, t in enumerate(target_list)
        )
    return aliases


def _listener(doc: Document, path: PathKey, value: Any, base_limits: Limits, base_dir: Path) -> ListenerConfig:
    section = _Section(doc, path, value)
    if not section.has("protocol"):
        raise doc.error(path, "protocol: required (lmtp, smtp or policy)")
    if not section.has("bind"):
        raise doc.error(path, "bind: required (HOST:PORT, [IPV6]:PORT or unix:/path)")
    protocol = section.convert("protocol", _choice(PROTOCOLS))
    bind = section.convert("bind", parse_bind)
    tls: TlsSettings | None = None
    if section.has("tls"):
        tls_section = section.sub("tls")
        for required in ("cert", "key"):
            if not tls_section.has(required):
                raise doc.error((*path, "tls"), f"{required}: required")
        tls = TlsSettings(
            cert=base_dir / tls_section.convert("cert", _str),
            key=base_dir / tls_section.convert("key", _str),
            mode=tls_section.get("mode", _choice(TLS_MODES), "starttls"),
        )
        tls_section.finish()
    auth: AuthSettings | None = None
    if section.has("auth"):
        auth_section = section.sub("auth")
        users_file = auth_section.get("users_file", _str, None)
        auth = AuthSettings(
            required=auth_section.get("required", _bool, False),
            users_file=base_dir / users_file if users_file else None,
        )
        auth_section.finish()
    listener = ListenerConfig(
        protocol=protocol,
        bind=bind,
        socket_mode=section.get("socket_mode", _socket_mode, None),
        socket_owner=section.get("socket_owner", _str, None),
        allow=section.get("allow", _networks, ()),
        tls=tls,
        require_tls=section.get("require_tls", _bool, False),
        auth=auth,
        proxy_protocol=section.get("proxy_protocol", _bool, False),
        proxy_trusted=section.get("proxy_trusted", _networks, ()),
        success_dsn=section.get("success_dsn", _bool, True),
        limits=_limits(section.sub("limits"), base_limits, listener=True),
    )
    section.finish()
    if not bind.is_unix and (listener.socket_mode is not None or listener.socket_owner):
        raise doc.error(path, "socket_mode and socket_owner apply to UNIX sockets only")
    if listener.require_tls and tls is None:
        raise doc.error((*path, "require_tls"), "needs a tls section")
    if auth is not None and tls is None:
        raise doc.error((*path, "auth"), "AUTH is offered only over TLS: add a tls section")
    if listener.proxy_trusted and not listener.proxy_protocol:
        raise doc.error((*path, "proxy_trusted"), "applies only with proxy_protocol: true")
    if listener.proxy_protocol and bind.is_unix:
        raise doc.error((*path, "proxy_protocol"), "applies to TCP listeners only (proxy_trusted lists addresses)")
    if protocol == "policy":
        # Postfix's policy client speaks plain name=value lines: no TLS, AUTH or PROXY header.
        for key, value in (("tls", tls), ("auth", auth), ("proxy_protocol", listener.proxy_protocol)):
            if value:
                raise doc.error((*path, key), "does not apply to a policy listener")
    return listener


def _submission(section: _Section) -> SubmissionConfig:
    no_command: tuple[str, ...] = ()
    sendmail = section.get("sendmail", _str_list, no_command)
    host = section.get("host", _str, None)
    port = section.get("port", _int(1, 65535), 25)
    section.finish()
    if bool(sendmail) == bool(host):
        raise section.doc.error(section.path, "give either host (and port) or sendmail")
    return SubmissionConfig(host=host, port=port, sendmail=sendmail)


def _sieve(section: _Section, base_dir: Path) -> SieveConfig:
    def scripts(value: Any) -> tuple[Path, ...]:
        if value in (None, []):
            return ()
        return tuple(base_dir / p for p in _str_list(value))

    sieve = SieveConfig(
        path=section.get("path", _template, "{home}/active.sieve"),
        before=section.get("before", scripts, ()),
        after=section.get("after", scripts, ()),
        work_limit=section.get("work_limit", _positive_size, SieveConfig.work_limit),
        settings=_sieve_settings(section, base_dir),
    )
    section.finish()
    return sieve


def _sieve_settings(section: _Section, base_dir: Path) -> SieveSettings:
    from mda.sieve.settings import SieveSettings  # mda.sieve imports this module: import when used

    return SieveSettings(
        spamtest=_score_test(section.sub("spamtest"), 10) if section.has("spamtest") else None,
        virustest=_score_test(section.sub("virustest"), 5) if section.has("virustest") else None,
        global_dir=section.get("global_dir", lambda v: base_dir / _str(v), None),
    )


def _score_test(section: _Section, top: int) -> ScoreTest:
    """``sieve.spamtest``/``sieve.virustest``: Pigeonhole's ``sieve_spamtest_*`` settings, same meaning."""
    from mda.sieve.settings import HeaderSpec, ScoreTest, parse_decimal

    def texts(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) > top + 1 or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of at most {top + 1} strings (the status texts for 0, 1, …)")
        return tuple(value)

    def decimal(value: Any) -> float:
        parsed = parse_decimal(str(value)) if isinstance(value, int | float | str) else None
        if not parsed or parsed < 0:
            raise ValueError(f"expected a positive decimal number, got {value!r}")
        return parsed

    def header(value: Any) -> HeaderSpec:
        return HeaderSpec.parse(_str(value))

    if not section.has("status_header"):
        raise section.doc.error(section.path, "status_header is required (FIELD or 'FIELD: REGEX')")
    try:
        test = ScoreTest(
            status_header=section.convert("status_header", header),
            status_type=section.get("status_type", _str, "score"),
            max_header=section.get("max_header", header, None),
            max_value=section.get("max_value", decimal, None),
            text_values=section.get("text_values", texts, ()),
        )
    except (TypeError, ValueError) as error:
        raise section.doc.error(section.path, str(error)) from None
    section.finish()
    return test


def _dsn_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1024:
        raise ValueError("must be at least 1K: a report's own parts need room")
    return size


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be more than 0")
    return size


def _workers(value: Any) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    return _int(1, 256)(value)


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def _default_hostname() -> str:
    """The machine's name as ``hostname -f`` gives it: ``gethostname()``, then its canonical name from
    ``getaddrinfo(AI_CANONNAME)``. Not ``socket.getfqdn()``: it takes the first alias of the address, which
    is ``localhost`` when ``/etc/hosts`` maps the host name to 127.0.0.1 after a ``localhost`` line."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, 0, 0, 0, socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        infos = []
    canonical = next((info[3] for info in infos if info[3]), "")
    if canonical and canonical.lower() not in _LOOPBACK_NAMES:
        name = canonical
    return name if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", name) else "localhost"


def build(doc: Document, base_dir: Path, users_doc: Document | None = None) -> Config:
    """Turn a loaded document into a ``Config``; every key and its default is declared here."""
    top = _Section(doc, (), doc.data)
    limits = _limits(top.sub("limits"), Limits())
    storage_section = top.sub("storage")
    storage = StorageConfig(
        format=storage_section.get("format", _choice(STORAGE_FORMATS), "maildir"),
        path=storage_section.get("path", _template, StorageConfig.path),
        fsync=storage_section.get("fsync", _bool, True),
        owner=storage_section.get("owner", _str, None),
        create_folders=storage_section.get("create_folders", _bool, False),
        max_folders=storage_section.get("max_folders", _int(0, 1_000_000), StorageConfig.max_folders),
        max_new_folders=storage_section.get("max_new_folders", _int(0, 1_000_000), StorageConfig.max_new_folders),
        lock_timeout=storage_section.get("lock_timeout", parse_duration, 30.0),
        quota_full_tempfail=storage_section.get("quota_full_tempfail", _bool, False),
        quota=storage_section.get("quota", parse_size, None),
        quota_messages=storage_section.get("quota_messages", _int(0, 2**62), None),
    )
    storage_section.finish()

    raw_listeners = top.values.get("listeners")
    top.used.add("listeners")
    if raw_listeners is None:
        raw_listeners = []  # mda deliver needs none; mda serve refuses (require_listeners)
    if not isinstance(raw_listeners, list):
        raise doc.error(("listeners",), "expected a list of listeners")
    listeners = tuple(_listener(doc, ("listeners", i), item, limits, base_dir) for i, item in enumerate(raw_listeners))
    seen_binds: set[BindAddress] = set()
    for i, listener in enumerate(listeners):
        if listener.bind in seen_binds and (listener.bind.is_unix or listener.bind.port != 0):
            raise doc.error(("listeners", i, "bind"), f"{listener.bind} is used by two listeners")
        seen_binds.add(listener.bind)

    users_file_name = top.get("users_file", _str, None)
    users_file = base_dir / users_file_name if users_file_name else None
    domains = _domains(doc, top)
    user_origins: _Origins = {}
    users = _users(doc, ("users",), top.values.get("users"), domains, user_origins)
    top.used.add("users")
    file_users: set[str] = set()
    if users_doc is not None:
        file_origins: _Origins = {}
        for address, settings in _users(users_doc, (), users_doc.data, domains, file_origins).items():
            if address in users:
                raise users_doc.error((address,), "also defined under users: in the main configuration")
            users[address] = settings
            user_origins[address] = file_origins[address]
            file_users.add(address)

    metrics = None
    if top.has("metrics") and top.values["metrics"] is not None:
        metrics_section = top.sub("metrics")
        if not metrics_section.has("bind"):
            raise doc.error(("metrics",), "bind: required (HOST:PORT)")
        metrics = MetricsConfig(bind=metrics_section.convert("bind", parse_bind))
        metrics_section.finish()
        if metrics.bind.is_unix:
            raise doc.error(("metrics", "bind"), "metrics are served over TCP only")
    else:
        top.used.add("metrics")

    delimiter = top.get("recipient_delimiter", lambda v: "" if v == "" else _str(v), "+")
    if any(c.isalnum() or c in "@." for c in delimiter):
        raise doc.error(("recipient_delimiter",), "delimiters must not be letters, digits, '@' or '.'")

    alias_keys: dict[str, str] = {}
    config = Config(
        hostname=top.get("hostname", _hostname, None) or _default_hostname(),
        listeners=listeners,
        domains=domains,
        storage=storage,
        users=users,
        aliases=_aliases(doc, top.values.get("aliases"), alias_keys),
        users_file=users_file,
        file_users=frozenset(file_users),
        recipient_delimiter=delimiter,
        case_sensitive_local_part=top.get("case_sensitive_local_part", _bool, False),
        max_hops=top.get("max_hops", _int(1, 1000), 50),
        duplicate_window=top.get("duplicate_window", parse_duration, 0.0),
        free_space_reserve=top.get("free_space_reserve", _reserve, "1%"),
        bare_newline=top.get("bare_newline", _choice(BARE_NEWLINE_MODES), "reject"),
        limits=limits,
        metrics=metrics,
        log_format=top.get("log_format", _choice(LOG_FORMATS), "text"),
        log_level=top.get("log_level", _choice(LOG_LEVELS), "info"),
        workers=top.get("workers", _workers, 1),
        shutdown_timeout=top.get("shutdown_timeout", parse_duration, 30.0),
        user=top.get("user", _str, None),
        state_dir=top.get("state_dir", lambda v: base_dir / _str(v), None),
        state=top.get("state", parse_state(base_dir), StateSettings()),
        submission=_submission(top.sub("submission")) if top.has("submission") else None,
        dsn_size_limit=top.get("dsn_size_limit", _dsn_size, 50_000),
        sieve=_sieve(top.sub("sieve"), base_dir) if top.has("sieve") else None,
        userdb=UserdbSettings(
            sources=top.get("userdb", parse_sources(base_dir), ()),
            cache=top.get("userdb_cache", parse_cache, UserdbSettings().cache),
        ),
    )
    top.used.update({"aliases", "submission", "sieve"})
    top.finish()
    if not config.case_sensitive_local_part:
        _check_folded_keys("users", user_origins)
        _check_folded_keys("aliases", {a: (doc, ("aliases", raw)) for a, raw in alias_keys.items()})
    _check_aliases(doc, config, alias_keys)
    return config


def _check_folded_keys(table: str, origins: _Origins) -> None:
    """Two keys that differ only in the case of their local part name one mailbox once local parts are
    folded (``case_sensitive_local_part: false``); the second would silently replace the first, so both
    lines are named instead."""
    from mda.addresses import fold_local

    seen: dict[str, tuple[Document, PathKey]] = {}
    for address, (doc, path) in origins.items():
        local, at, domain = address.rpartition("@")
        folded = f"{fold_local(local, False)}{at}{domain}" if local else address
        if folded in seen:
            first_doc, first_path = seen[folded]
            where = f"{first_doc.name}:{first_doc.line_of(first_path)}"
            raise doc.error(
                path,
                f"the same {table[:-1]} as {format_path(first_path) or first_path[-1]} at {where}: local parts "
                "compare case-insensitively (case_sensitive_local_part: false)",
            )
        seen[folded] = (doc, path)


def _check_aliases(doc: Document, config: Config, raw_keys: Mapping[str, str]) -> None:
    """Alias sources and targets must be in our domains (mda delivers, it never forwards: a foreign
    target would be dropped at delivery), and no chain may lead back to itself."""
    from mda.aliases import AliasCycleError, check_alias_cycles

    for source, targets in config.aliases.items():
        key_path: PathKey = ("aliases", raw_keys.get(source, source))
        if source.rpartition("@")[2] not in config.domains:
            raise doc.error(key_path, f"alias {source} is not in a domain listed under domains")
        for target in targets:
            domain = target.rpartition("@")[2]
            if domain not in config.domains:
                raise doc.error(key_path, f"target {target} is not in a domain listed under domains")
    fold = not config.case_sensitive_local_part
    try:
        check_alias_cycles(config.aliases, fold=fold)
    except AliasCycleError as error:
        spelled = {(key.lower() if fold else key): raw for key, raw in raw_keys.items()}
        raise doc.error(("aliases", spelled.get(error.cycle[0], error.cycle[0])), str(error)) from None


def _file_version(path: Path) -> bytes:
    """What a watched file holds now (following symlinks); a missing or unreadable file is its own state."""
    try:
        return path.read_bytes()
    except OSError as error:
        return f"<{error.errno}>".encode()


def content_digest(versions: Iterable[tuple[Path, bytes]]) -> str:
    """The version of a configuration: its files' names and contents, hashed."""
    digest = hashlib.sha256()
    for path, content in versions:
        digest.update(str(path).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def current_digest(paths: Iterable[Path]) -> str:
    """``content_digest`` of the files as they are now: what reload compares with the running version."""
    return content_digest((path, _file_version(path)) for path in paths)


def load(path: Path | None) -> Config:
    """Load the configuration file at ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        doc = load_text(DEFAULT_CONFIG_YAML, "<default>")
        config = build(doc, Path.cwd())
        return replace(config, digest=content_digest([(Path("<default>"), DEFAULT_CONFIG_YAML.encode())]))
    doc = load_file(path)
    base_dir = path.parent.resolve()
    users_doc = None
    raw_users_file = doc.data.get("users_file") if isinstance(doc.data, dict) else None
    if isinstance(raw_users_file, str) and raw_users_file:
        users_doc = load_file(base_dir / raw_users_file)
    config = replace(build(doc, base_dir, users_doc), source=path)
    # The digest is of the bytes parsed, not of a second read: an edit racing the load is then a change.
    versions = [(path, doc.raw)]
    if config.users_file is not None and users_doc is not None:
        versions.append((config.users_file, users_doc.raw))
    return replace(config, digest=content_digest(versions))


NO_LISTENERS = "mda serve needs at least one listener (mda deliver, resolve and check-config need none)"


def require_listeners(config: Config) -> Config:
    """``config``, if ``mda serve`` can run it: a server without a listener would accept no mail."""
    if not config.listeners:
        raise ConfigError(str(config.source or "<default>"), None, "listeners", NO_LISTENERS)
    return config


def load_for_serve(path: Path | None) -> Config:
    """``load`` plus what only the server needs (at start and at every reload)."""
    return require_listeners(load(path))


def watched_files(config: Config) -> Iterator[Path]:
    """Files whose change means a reload: the config file and the users file."""
    if config.source is not None:
        yield config.source
    if config.users_file is not None:
        yield config.users_file


def _duration_text(seconds: float) -> str | float:
    return f"{int(seconds)}s" if seconds == int(seconds) else seconds


def _limits_document(limits: Limits, *, process: bool = False) -> dict[str, Any]:
    """A ``limits`` mapping; ``process``: the top-level one, with the keys of ``PROCESS_LIMITS``."""
    document: dict[str, Any] = {
        "max_message_size": limits.max_message_size,
        "max_recipients": limits.max_recipients,
        "max_connections": limits.max_connections,
        "max_connections_per_client": limits.max_connections_per_client,
        "command_timeout": _duration_text(limits.command_timeout),
        "data_timeout": _duration_text(limits.data_timeout),
        "max_header_size": limits.max_header_size,
        # Unset error limits follow the listener's protocol (Limits.error_limits): printed only when set.
        **({"hard_error_limit": limits.hard_error_limit} if limits.hard_error_limit is not None else {}),
        **({"junk_command_limit": limits.junk_command_limit} if limits.junk_command_limit is not None else {}),
    }
    if process:
        document["spool_memory"] = limits.spool_memory
    return document


def _mailbox_document(settings: MailboxSettings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings) if getattr(settings, f.name) is not None}


def _listener_document(listener: ListenerConfig) -> dict[str, Any]:
    plain: dict[str, Any] = {"protocol": listener.protocol, "bind": str(listener.bind)}
    if listener.socket_mode is not None:
        plain["socket_mode"] = f"{listener.socket_mode:04o}"
    if listener.socket_owner is not None:
        plain["socket_owner"] = listener.socket_owner
    if listener.allow:
        plain["allow"] = [str(network) for network in listener.allow]
    if listener.tls is not None:
        plain["tls"] = {"cert": str(listener.tls.cert), "key": str(listener.tls.key), "mode": listener.tls.mode}
    plain["require_tls"] = listener.require_tls
    if listener.auth is not None:
        plain["auth"] = {"required": listener.auth.required}
        if listener.auth.users_file is not None:
            plain["auth"]["users_file"] = str(listener.auth.users_file)
    plain["proxy_protocol"] = listener.proxy_protocol
    plain["limits"] = _limits_document(listener.limits)
    return plain


def to_document(config: Config) -> dict[str, Any]:
    """The effective configuration as a configuration file (``check-config --print``): every key with
    its value, defaults included, in the names ``build`` reads, so the output loads back to the same
    configuration (and prints the same again). Relative file names come out absolute; users that come
    from ``users_file`` stay there."""
    storage = config.storage
    document: dict[str, Any] = {
        "hostname": config.hostname,
        "listeners": [_listener_document(listener) for listener in config.listeners],
        "domains": {
            name: {
                "any_user": domain.any_user,
                "passwd": domain.passwd,
                **({"first_valid_uid": domain.first_valid_uid} if domain.passwd else {}),
                **({"last_valid_uid": domain.last_valid_uid} if domain.last_valid_uid is not None else {}),
                **_mailbox_document(domain.mailbox),
            }
            for name, domain in config.domains.items()
        },
        "storage": {
            "format": storage.format,
            "path": storage.path,
            "fsync": storage.fsync,
            **({"owner": storage.owner} if storage.owner is not None else {}),
            "create_folders": storage.create_folders,
            "max_folders": storage.max_folders,
            "max_new_folders": storage.max_new_folders,
            "lock_timeout": _duration_text(storage.lock_timeout),
            "quota_full_tempfail": storage.quota_full_tempfail,
            **({"quota": storage.quota} if storage.quota is not None else {}),
            **({"quota_messages": storage.quota_messages} if storage.quota_messages is not None else {}),
        },
        "users": {
            address: _mailbox_document(settings)
            for address, settings in config.users.items()
            if address not in config.file_users
        },
    }
    if config.users_file is not None:
        document["users_file"] = str(config.users_file)
    document["aliases"] = {source: list(targets) for source, targets in config.aliases.items()}
    document.update(
        {
            "recipient_delimiter": config.recipient_delimiter,
            "case_sensitive_local_part": config.case_sensitive_local_part,
            "max_hops": config.max_hops,
            "duplicate_window": _duration_text(config.duplicate_window),
            "free_space_reserve": config.free_space_reserve,
            "bare_newline": config.bare_newline,
            "limits": _limits_document(config.limits, process=True),
        }
    )
    if config.metrics is not None:
        document["metrics"] = {"bind": str(config.metrics.bind)}
    document.update(
        {
            "log_format": config.log_format,
            "log_level": config.log_level,
            "workers": config.workers,
            "shutdown_timeout": _duration_text(config.shutdown_timeout),
        }
    )
    if config.user is not None:
        document["user"] = config.user
    if config.state_dir is not None:
        document["state_dir"] = str(config.state_dir)
    if config.state.shared:
        document["state"] = state_document(config.state)
    if config.submission is not None:
        submission = config.submission
        document["submission"] = (
            {"sendmail": list(submission.sendmail)}
            if submission.sendmail
            else {"host": submission.host, "port": submission.port}
        )
    if config.userdb.sources:
        cache = config.userdb.cache
        document["userdb"] = [source_document(source) for source in config.userdb.sources]
        document["userdb_cache"] = {
            "ttl": _duration_text(cache.ttl),
            "negative_ttl": _duration_text(cache.negative_ttl),
            "size": cache.size,
        }
    if config.sieve is not None:
        document["sieve"] = {
            **({"path": config.sieve.path} if config.sieve.path is not None else {}),
            "before": [str(path) for path in config.sieve.before],
            "after": [str(path) for path in config.sieve.after],
            "work_limit": config.sieve.work_limit,
        }
        settings = config.sieve.settings
        if settings is not None and settings.global_dir is not None:
            document["sieve"]["global_dir"] = str(settings.global_dir)
        for name in ("spamtest", "virustest"):
            score_test = getattr(settings, name, None)
            if score_test is not None:
                document["sieve"][name] = _score_test_document(score_test)
    return document


def _score_test_document(test: ScoreTest) -> dict[str, Any]:
    def header(spec: HeaderSpec) -> str:
        return spec.field if spec.regex is None else f"{spec.field}: {spec.regex}"

    out: dict[str, Any] = {"status_header": header(test.status_header), "status_type": test.status_type}
    if test.max_header is not None:
        out["max_header"] = header(test.max_header)
    if test.max_value is not None:
        out["max_value"] = test.max_value
    if test.text_values:
        out["text_values"] = list(test.text_values)
    return out
