"""The configuration: YAML in, frozen dataclasses out, every key and default declared once.

Each key is a dataclass field declared with ``setting()``: its type, its default and the converter that
validates it, in one line. ``build`` walks the fields (``_read``) and ``check-config --print`` walks them
back (``_document``); nothing else repeats a key's name or default. Enumerated values are the ``StrEnum``
types of ``mda.enums``. The reference is ``docs/configuration.md`` (tests/docs checks it). Unknown keys
are errors naming file, line and key, because a typo in a mail server's configuration must never pass
silently. Nothing here is read again at delivery time: a loaded ``Config`` is immutable and a reload
builds a new one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import math
import os
import re
import socket
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from mda.enums import BareNewline, LogFormat, LogLevel, Protocol, StorageFormat, TlsMode
from mda.sieve.budget import DEFAULT_WORK_LIMIT
from mda.statestore.settings import StateSettings, parse_state, state_document
from mda.units import parse_duration, parse_size
from mda.userdb.settings import UserdbSettings, parse_cache, parse_sources, source_document
from mda.yamlsource import ConfigError, Document, PathKey, format_path, load_file, load_text

if TYPE_CHECKING:
    from mda.sieve.settings import HeaderSpec, ScoreTest, SieveSettings

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
D = TypeVar("D")

TEMPLATE_FIELDS = ("user", "domain", "detail", "home")
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


WORKERS_AUTO: Final = "auto"
"""The default ``workers``: one process per core, because one Python process uses one core for its
Python work and parsing and storing mail is CPU work (README "Workers")."""

SMTP_HARD_ERROR_LIMIT = 20
"""Postfix ``smtpd_hard_error_limit``."""
SMTP_JUNK_COMMAND_LIMIT = 100
"""Postfix ``smtpd_junk_command_limit``."""
MIN_HEADER_SIZE = 1024
"""A header section limit below this would refuse ordinary mail (a few ``Received`` fields)."""


# --- value converters: what one value in the file may be --------------------------------------------
# Each takes the YAML value and returns the parsed one, or raises ValueError with a message for the
# operator; the loader prefixes it with file, line and key.


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


def _choice(options: type[E]) -> Callable[[Any], E]:
    """The member of ``options`` the value names; any other value is refused, listing the allowed ones."""

    def convert(value: Any) -> E:
        for member in options:
            if value == member.value:
                return member
        raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")

    return convert


def _alternatives(options: type[StrEnum]) -> str:
    """``a, b or c``: the values of ``options`` for a message."""
    *rest, last = list(options)
    return f"{', '.join(rest)} or {last}" if rest else last


def _hostname(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text):
        raise ValueError(f"not a valid host name: {text!r}")
    return text


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


def _octal(mode: int) -> str:
    return f"{mode:04o}"


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


def _file(base_dir: Path) -> Callable[[Any], Path]:
    """A file name, relative to the configuration file's directory."""
    return lambda value: base_dir / _str(value)


def _files(base_dir: Path) -> Callable[[Any], tuple[Path, ...]]:
    """One file name or a list of them (empty allowed), each relative to the configuration file's directory."""

    def convert(value: Any) -> tuple[Path, ...]:
        if value in (None, []):
            return ()
        return tuple(base_dir / name for name in _str_list(value))

    return convert


@dataclass(frozen=True)
class Reserve:
    """``free_space_reserve``, parsed once: a share of the filesystem's blocks and inodes (``1%``), or a
    number of bytes (``500M``) and no inodes."""

    text: str
    fraction: float | None = None
    size: int = 0

    @classmethod
    def parse(cls, value: Any) -> Reserve:
        text = str(value).strip()
        if not text.endswith("%"):
            try:
                return cls(text, size=parse_size(text))
            except ValueError:
                raise ValueError(f"expected a percentage like 1% or a size like 500M, got {value!r}") from None
        try:
            number = float(text[:-1])
        except ValueError:
            raise ValueError(f"expected a percentage like 1% or a size like 500M, got {value!r}") from None
        if not 0 <= number < 100:
            raise ValueError("a percentage must be between 0% and 100%")
        return cls(text, fraction=number / 100)

    def of(self, total: int) -> int:
        """The bytes to keep free on a filesystem of ``total`` bytes."""
        return int(total * self.fraction) if self.fraction is not None else self.size

    def inodes_of(self, total: int) -> int:
        """The inodes to keep free out of ``total``; a reserve given as a size keeps none."""
        return int(total * self.fraction) if self.fraction is not None else 0

    def __str__(self) -> str:
        return self.text


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


def _workers(value: Any) -> int | Literal["auto"]:
    if value == WORKERS_AUTO:
        return WORKERS_AUTO
    if isinstance(value, str):
        raise ValueError(f"expected a whole number or auto, got {value!r}")
    return _int(1, 256)(value)


def _delimiter(value: Any) -> str:
    text = "" if value == "" else _str(value)
    if any(c.isalnum() or c in "@." for c in text):
        raise ValueError("delimiters must not be letters, digits, '@' or '.'")
    return text


def _duration_text(seconds: float) -> str | float:
    return f"{int(seconds)}s" if seconds == int(seconds) else seconds


_count = _int(0, 2**62)
_many = _int(1, 1_000_000)
_limit = _int(0, 1_000_000)
_uid = _int(0, MAX_UID)


# --- declaring a key ---------------------------------------------------------------------------------


def setting(
    default: Any = MISSING,
    parse: Callable[[Any], Any] | None = None,
    *,
    in_dir: Callable[[Path], Callable[[Any], Any]] | None = None,
    show: Callable[[Any], Any] | None = None,
    hint: str = "",
    needs: str = "",
    process: bool = False,
    user_only: bool = False,
) -> Any:
    """A dataclass field that is a configuration key of the same name: its default and its converter.

    ``in_dir``: the converter needs the configuration file's directory (file names are relative to it).
    ``show``: how ``check-config --print`` writes the value back (default: ``_plain``). No ``default``:
    the key is required, and ``hint`` says what it takes. ``needs``: the key applies only when that
    boolean key of the same section is true. ``process`` (``limits``): top level only. ``user_only``
    (``MailboxSettings``): a user's setting that a domain may not set.
    """
    if (parse is None) == (in_dir is None):
        raise TypeError("a setting needs exactly one of parse and in_dir")
    metadata = {
        "parse": parse,
        "in_dir": in_dir,
        "show": show,
        "hint": hint,
        "needs": needs,
        "process": process,
        "user_only": user_only,
    }
    return field(default=default, metadata=metadata)


def _default(cls: Any, name: str) -> Any:
    """The declared default of field ``name`` of dataclass ``cls`` (also when ``cls`` has ``__slots__``)."""
    return next(f.default for f in fields(cls) if f.name == name)


def key_fields(cls: Any) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of dataclass ``cls`` (or of an instance) that are configuration keys, in order."""
    return tuple(f for f in fields(cls) if "parse" in f.metadata)


# --- the configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-session limits; each listener may override any of them."""

    max_message_size: int = setting(50 * 1024 * 1024, parse_size)
    max_recipients: int = setting(1000, _many)
    max_connections: int = setting(1000, _many)
    max_connections_per_client: int = setting(100, _many)
    command_timeout: float = setting(300.0, parse_duration, show=_duration_text)
    """RFC 5321 §4.5.3.2.7: at least 5 minutes per command."""
    data_timeout: float = setting(600.0, parse_duration, show=_duration_text)
    max_header_size: int = setting(100 * 1024, _header_size)
    """Postfix's ``header_size_limit`` (102400): a larger header section is refused with ``552 5.3.4``."""
    hard_error_limit: int | None = setting(None, _limit)
    """Error replies allowed in a session that has not delivered a message; None: the protocol's default
    (``error_limits``); 0: no limit."""
    junk_command_limit: int | None = setting(None, _limit)
    """NOOP, RSET, VRFY, HELP, LHLO/EHLO/HELO and ``BDAT 0`` allowed before each counts as an error."""
    spool_memory: int = setting(64 * 1024 * 1024, parse_size, process=True)
    """Process-wide, top level only: bytes all DATA spools of one process may hold in memory together;
    beyond, spools spill to files. With the default, 1000 sessions in DATA stay within 256 MiB RSS."""

    def error_limits(self, protocol: Protocol) -> tuple[int, int]:
        """``(hard_error_limit, junk_command_limit)`` for a listener of ``protocol`` (0: no limit).

        SMTP takes Postfix's ``smtpd_hard_error_limit`` (20) and ``smtpd_junk_command_limit`` (100). An LMTP
        client is an MTA handing over mail it already accepted: one transaction may legitimately carry
        ``max_recipients`` refused RCPTs, so LMTP adds ``max_recipients`` to both.
        """
        extra = self.max_recipients if protocol == Protocol.LMTP else 0
        hard = SMTP_HARD_ERROR_LIMIT + extra if self.hard_error_limit is None else self.hard_error_limit
        junk = SMTP_JUNK_COMMAND_LIMIT + extra if self.junk_command_limit is None else self.junk_command_limit
        return hard, junk


PROCESS_LIMITS = tuple(f.name for f in key_fields(Limits) if f.metadata["process"])
"""Keys of ``limits`` that concern the whole process, not a session: not allowed per listener."""


@dataclass(frozen=True)
class TlsSettings:
    cert: Path = setting(in_dir=_file)
    key: Path = setting(in_dir=_file)
    mode: TlsMode = setting(TlsMode.STARTTLS, _choice(TlsMode))


@dataclass(frozen=True)
class AuthSettings:
    required: bool = setting(False, _bool)
    users_file: Path | None = setting(None, in_dir=_file)


@dataclass(frozen=True)
class ListenerConfig:
    protocol: Protocol = setting(parse=_choice(Protocol), hint=_alternatives(Protocol))
    bind: BindAddress = setting(parse=parse_bind, hint="HOST:PORT, [IPV6]:PORT or unix:/path")
    socket_mode: int | None = setting(None, _socket_mode, show=_octal)
    socket_owner: str | None = setting(None, _str)
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting((), _networks)
    tls: TlsSettings | None = None
    require_tls: bool = setting(False, _bool)
    auth: AuthSettings | None = None
    proxy_protocol: bool = setting(False, _bool)
    proxy_trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting((), _networks)
    """Peers allowed to send a PROXY header; empty trusts no one (README, "Protocol")."""
    success_dsn: bool = setting(True, _bool)
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


_storage_format = _choice(StorageFormat)


@dataclass(frozen=True)
class MailboxSettings:
    """Settings a user, a domain or the global storage section may set; ``None`` means inherit."""

    path: str | None = setting(None, _template)
    format: StorageFormat | None = setting(None, _storage_format)
    quota: int | None = setting(None, parse_size)
    quota_messages: int | None = setting(None, _count)
    sieve: str | None = setting(None, _template, user_only=True)
    owner: str | None = setting(None, _str)
    create_folders: bool | None = setting(None, _bool)

    def over(self, fallback: MailboxSettings) -> MailboxSettings:
        """These settings with every unset value taken from ``fallback``."""
        return MailboxSettings(
            **{
                name: getattr(self, name) if getattr(self, name) is not None else getattr(fallback, name)
                for name in _MAILBOX_KEYS
            }
        )


_MAILBOX_KEYS = tuple(f.name for f in fields(MailboxSettings))


@functools.lru_cache(maxsize=1024)
def effective_settings(user: MailboxSettings, domain: MailboxSettings, storage: MailboxSettings) -> MailboxSettings:
    """A user's settings over their domain's over ``storage:`` (``StorageConfig.mailbox``), merged once
    per distinct trio: every recipient needs them, and a few trios serve most mail. The key is the
    settings' values (frozen dataclasses), so a reload that changes one is a new key; so is each
    distinct userdb row."""
    return user.over(domain).over(storage)


_USER_ONLY = tuple(f.name for f in key_fields(MailboxSettings) if f.metadata["user_only"])
"""Mailbox settings a domain may not set (a Sieve script is one user's)."""


@dataclass(frozen=True)
class DomainConfig:
    name: str
    any_user: bool = setting(False, _bool)
    passwd: bool = setting(False, _bool)
    first_valid_uid: int = setting(1000, _uid, needs="passwd")
    """``passwd`` domains: system users below this uid (daemons, ``www-data``) are not recipients. Debian's
    and Fedora's ``UID_MIN``; Dovecot's own default is 500."""
    last_valid_uid: int | None = setting(None, _uid, needs="passwd")
    """``passwd`` domains: nor above this uid (None: no upper bound)."""
    mailbox: MailboxSettings = field(default_factory=MailboxSettings)


@dataclass(frozen=True)
class StorageConfig:
    format: StorageFormat = setting(StorageFormat.MAILDIR, _storage_format)
    path: str = setting("/var/vmail/{domain}/{user}/Maildir", _template)
    fsync: bool = setting(True, _bool)
    owner: str | None = setting(None, _str)
    create_folders: bool = setting(False, _bool)
    max_folders: int = setting(100, _limit)
    """With ``create_folders``: no folder is created in a Maildir that already has this many (INBOX instead)."""
    max_new_folders: int = setting(5, _limit)
    """With ``create_folders``: at most this many folders created for one message (the rest: INBOX)."""
    lock_timeout: float = setting(30.0, parse_duration, show=_duration_text)
    quota_full_tempfail: bool = setting(False, _bool)
    quota: int | None = setting(None, parse_size)
    quota_messages: int | None = setting(None, _count)

    @functools.cached_property
    def mailbox(self) -> MailboxSettings:
        """The global defaults as the last fallback of per-user settings: the keys both sections have
        (built once: this object never changes, a reload builds a new one)."""
        shared = {f.name for f in fields(self)}
        return MailboxSettings(**{name: getattr(self, name) for name in _MAILBOX_KEYS if name in shared})


@dataclass(frozen=True)
class MetricsConfig:
    bind: BindAddress = setting(parse=parse_bind, hint="HOST:PORT")


@dataclass(frozen=True)
class SubmissionConfig:
    """Outbound path for Sieve redirect/vacation and DSNs: SMTP host:port, or a sendmail command."""

    host: str | None = setting(None, _str)
    port: int = setting(25, _int(1, 65535))
    sendmail: tuple[str, ...] = setting((), _str_list)


@dataclass(frozen=True)
class SieveConfig:
    path: str | None = setting("{home}/active.sieve", _template)
    before: tuple[Path, ...] = setting((), in_dir=_files)
    after: tuple[Path, ...] = setting((), in_dir=_files)
    work_limit: int = setting(DEFAULT_WORK_LIMIT, _positive_size)
    """Work units one recipient's scripts may spend (about one per byte compared); beyond, a runtime
    error and the implicit keep (mda.sieve.budget)."""
    settings: SieveSettings | None = None
    """spamtest/virustest sources and the include :global directory (mda.sieve.settings); None: none."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """One complete, validated configuration. Immutable: a reload builds a new one and swaps it in."""

    hostname: str = setting("", _hostname)
    """Empty in the declaration only: ``build`` fills in the machine's name (``_default_hostname``)."""
    listeners: tuple[ListenerConfig, ...]
    domains: Mapping[str, DomainConfig]
    storage: StorageConfig
    users: Mapping[str, MailboxSettings]
    aliases: Mapping[str, tuple[str, ...]]
    users_file: Path | None = setting(None, in_dir=_file)
    file_users: frozenset[str] = frozenset()
    """The addresses of ``users`` that come from ``users_file`` (``check-config --print`` leaves them there)."""
    recipient_delimiter: str = setting("+", _delimiter)
    case_sensitive_local_part: bool = setting(False, _bool)
    max_hops: int = setting(50, _int(1, 1000))
    duplicate_window: float = setting(0.0, parse_duration, show=_duration_text)
    free_space_reserve: Reserve = setting(Reserve.parse("1%"), Reserve.parse)
    bare_newline: BareNewline = setting(BareNewline.REJECT, _choice(BareNewline))
    limits: Limits = field(default_factory=Limits)
    metrics: MetricsConfig | None = None
    log_format: LogFormat = setting(LogFormat.TEXT, _choice(LogFormat))
    log_level: LogLevel = setting(LogLevel.INFO, _choice(LogLevel))
    workers: int | Literal["auto"] = setting(WORKERS_AUTO, _workers)
    """Worker processes (mda.workers), or ``auto``: one per core this process may run on (``worker_count``)."""
    shutdown_timeout: float = setting(30.0, parse_duration, show=_duration_text)
    user: str | None = setting(None, _str)
    state_dir: Path | None = setting(None, in_dir=_file)
    state: StateSettings = setting(StateSettings(), in_dir=parse_state, show=state_document)
    submission: SubmissionConfig | None = None
    dsn_size_limit: int = setting(50_000, _dsn_size)
    """The most of the original message a success DSN returns (Postfix's ``bounce_size_limit``)."""
    sieve: SieveConfig | None = None
    userdb: UserdbSettings = field(default_factory=UserdbSettings)
    """More user sources, consulted after ``users`` (README "User databases")."""
    source: Path | None = None
    digest: str = ""

    def worker_count(self) -> int:
        """How many processes serve: ``workers``, with ``auto`` resolved to the cores this process may use."""
        return self.workers if isinstance(self.workers, int) else usable_cores()


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2: ``QUOTA PERIOD`` (or ``max PERIOD``), what a container's CPU limit becomes."""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity (which a cpuset narrows), and no more than its
    cgroup's CPU quota rounded up (a container limited to 2 CPUs on a 64-core node runs 2 workers)."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2 here, or a line it cannot read
        pass
    return cores


# --- reading sections ------------------------------------------------------------------------------------


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


def _read(
    section: _Section,
    cls: type[D],
    *,
    base: D | None = None,
    base_dir: Path | None = None,
    skip: Collection[str] = (),
    **given: Any,
) -> D:
    """A ``cls`` from ``section``: every key field (``setting``) read with its converter, in declaration
    order; an absent key takes the field's default, or ``base``'s value. ``given`` fills the fields that
    are not keys of this mapping (sub-sections, names); ``skip`` leaves keys out (they are then unknown).
    Required keys are checked first, so a missing one is named before any bad value."""
    wanted = [f for f in key_fields(cls) if f.name not in skip and f.name not in given]
    for f in wanted:
        if f.default is MISSING and not section.has(f.name):
            hint = f.metadata["hint"]
            raise section.doc.error(section.path, f"{f.name}: required" + (f" ({hint})" if hint else ""))
    values: dict[str, Any] = {}
    for f in wanted:
        needs = f.metadata["needs"]
        if needs and section.has(f.name) and not values[needs]:
            raise section.doc.error((*section.path, f.name), f"{f.name} needs {needs}: true")
        convert = f.metadata["parse"]
        if convert is None:
            assert base_dir is not None, f"{cls.__name__}.{f.name} names a file: pass base_dir"
            convert = f.metadata["in_dir"](base_dir)
        values[f.name] = section.get(f.name, convert, f.default if base is None else getattr(base, f.name))
    return cls(**values, **given)


def _limits(section: _Section, base: Limits | None = None, *, listener: bool = False) -> Limits:
    for key in PROCESS_LIMITS:
        if listener and section.has(key):
            raise section.doc.error(
                (*section.path, key), "applies to the whole process: set it under the top-level limits"
            )
    limits = _read(section, Limits, base=base)
    section.finish()
    return limits


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
        users[address] = _read(sub, MailboxSettings)
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
        domain = _read(sub, DomainConfig, name=ascii_name)
        if domain.last_valid_uid is not None and domain.last_valid_uid < domain.first_valid_uid:
            raise doc.error((*entry_path, "last_valid_uid"), "last_valid_uid is below first_valid_uid")
        domains[ascii_name] = replace(domain, mailbox=_read(sub, MailboxSettings, skip=_USER_ONLY))
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
    listener = _read(section, ListenerConfig, limits=base_limits)
    tls = auth = None
    if section.has("tls"):
        tls_section = section.sub("tls")
        tls = _read(tls_section, TlsSettings, base_dir=base_dir)
        tls_section.finish()
    if section.has("auth"):
        auth_section = section.sub("auth")
        auth = _read(auth_section, AuthSettings, base_dir=base_dir)
        auth_section.finish()
    listener = replace(listener, tls=tls, auth=auth, limits=_limits(section.sub("limits"), base_limits, listener=True))
    section.finish()
    if not listener.bind.is_unix and (listener.socket_mode is not None or listener.socket_owner):
        raise doc.error(path, "socket_mode and socket_owner apply to UNIX sockets only")
    if listener.require_tls and tls is None:
        raise doc.error((*path, "require_tls"), "needs a tls section")
    if auth is not None and tls is None:
        raise doc.error((*path, "auth"), "AUTH is offered only over TLS: add a tls section")
    if listener.proxy_trusted and not listener.proxy_protocol:
        raise doc.error((*path, "proxy_trusted"), "applies only with proxy_protocol: true")
    if listener.proxy_protocol and listener.bind.is_unix:
        raise doc.error((*path, "proxy_protocol"), "applies to TCP listeners only (proxy_trusted lists addresses)")
    if listener.protocol == Protocol.POLICY:
        # Postfix's policy client speaks plain name=value lines: no TLS, AUTH or PROXY header.
        for key, value in (("tls", tls), ("auth", auth), ("proxy_protocol", listener.proxy_protocol)):
            if value:
                raise doc.error((*path, key), "does not apply to a policy listener")
    return listener


def _submission(section: _Section) -> SubmissionConfig:
    submission = _read(section, SubmissionConfig)
    section.finish()
    if bool(submission.sendmail) == bool(submission.host):
        raise section.doc.error(section.path, "give either host (and port) or sendmail")
    return submission


def _sieve(section: _Section, base_dir: Path) -> SieveConfig:
    sieve = _read(section, SieveConfig, base_dir=base_dir, settings=_sieve_settings(section, base_dir))
    section.finish()
    return sieve


def _sieve_settings(section: _Section, base_dir: Path) -> SieveSettings:
    from mda.sieve.settings import SieveSettings  # mda.sieve imports this module: import when used

    return SieveSettings(
        spamtest=_score_test(section.sub("spamtest"), 10) if section.has("spamtest") else None,
        virustest=_score_test(section.sub("virustest"), 5) if section.has("virustest") else None,
        global_dir=section.get("global_dir", _file(base_dir), None),
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
            status_type=section.get("status_type", _str, _default(ScoreTest, "status_type")),
            max_header=section.get("max_header", header, None),
            max_value=section.get("max_value", decimal, None),
            text_values=section.get("text_values", texts, ()),
        )
    except (TypeError, ValueError) as error:
        raise section.doc.error(section.path, str(error)) from None
    section.finish()
    return test


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
    """Turn a loaded document into a ``Config``: the sections first, then every top-level key."""
    top = _Section(doc, (), doc.data)
    limits = _limits(top.sub("limits"))
    storage_section = top.sub("storage")
    storage = _read(storage_section, StorageConfig)
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
        metrics = _read(metrics_section, MetricsConfig)
        metrics_section.finish()
        if metrics.bind.is_unix:
            raise doc.error(("metrics", "bind"), "metrics are served over TCP only")
    else:
        top.used.add("metrics")

    alias_keys: dict[str, str] = {}
    default_userdb = UserdbSettings()
    config = _read(
        top,
        Config,
        base_dir=base_dir,
        listeners=listeners,
        domains=domains,
        storage=storage,
        users=users,
        aliases=_aliases(doc, top.values.get("aliases"), alias_keys),
        file_users=frozenset(file_users),
        limits=limits,
        metrics=metrics,
        submission=_submission(top.sub("submission")) if top.has("submission") else None,
        sieve=_sieve(top.sub("sieve"), base_dir) if top.has("sieve") else None,
        userdb=UserdbSettings(
            sources=top.get("userdb", parse_sources(base_dir), default_userdb.sources),
            cache=top.get("userdb_cache", parse_cache, default_userdb.cache),
        ),
    )
    if not config.hostname:
        config = replace(config, hostname=_default_hostname())
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


# --- writing it back (check-config --print) --------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A parsed value as a configuration file writes it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and key_fields(value):
        return _document(value)
    return str(value)  # Path, BindAddress, networks, Reserve


def _document(settings: Any, *, skip: Collection[str] = ()) -> dict[str, Any]:
    """The keys of ``settings`` in the names ``_read`` reads, each written by its ``show`` (or ``_plain``).
    Unset (None) and empty values are left out, and so are keys whose ``needs`` is false."""
    document: dict[str, Any] = {}
    for f in key_fields(settings):
        value = getattr(settings, f.name)
        needs = f.metadata["needs"]
        if f.name in skip or value is None or value == () or (needs and not getattr(settings, needs)):
            continue
        document[f.name] = (f.metadata["show"] or _plain)(value)
    return document


def _listener_document(listener: ListenerConfig) -> dict[str, Any]:
    plain = _document(listener)
    if listener.tls is not None:
        plain["tls"] = _document(listener.tls)
    if listener.auth is not None:
        plain["auth"] = _document(listener.auth)
    plain["limits"] = _document(listener.limits, skip=PROCESS_LIMITS)
    return plain


def to_document(config: Config) -> dict[str, Any]:
    """The effective configuration as a configuration file (``check-config --print``): every key with
    its value, defaults included, in the names ``build`` reads, so the output loads back to the same
    configuration (and prints the same again). Relative file names come out absolute; users that come
    from ``users_file`` stay there."""
    document: dict[str, Any] = {
        "hostname": config.hostname,
        "listeners": [_listener_document(listener) for listener in config.listeners],
        "domains": {
            name: {**_document(domain), **_document(domain.mailbox)} for name, domain in config.domains.items()
        },
        "storage": _document(config.storage),
        "users": {
            address: _document(settings)
            for address, settings in config.users.items()
            if address not in config.file_users
        },
    }
    if config.users_file is not None:
        document["users_file"] = str(config.users_file)
    document["aliases"] = {source: list(targets) for source, targets in config.aliases.items()}
    document.update(_document(config, skip=("hostname", "users_file")))
    document["limits"] = _document(config.limits)
    if config.metrics is not None:
        document["metrics"] = _document(config.metrics)
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
        document["sieve"] = _document(config.sieve)
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
