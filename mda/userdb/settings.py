"""The ``userdb:`` and ``userdb_cache:`` configuration keys: parsed and validated at load, nothing opened.

Kept apart from the drivers so that ``mda.config`` can validate a source (its driver, its keys, its
query placeholders) without importing a database client: a driver whose client library is missing is
reported when the sources are built (``mda check-config`` and ``mda serve`` both build them).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mda.units import parse_duration

DRIVERS = ("passwd-file", "sql", "dovecot", "ldap")
PLACEHOLDERS = ("address", "local", "domain", "detail")
"""What a query or filter may name: the address without its detail, its local part, its domain, the detail."""
ROW_FIELDS = (
    "path",
    "format",
    "quota",
    "quota_messages",
    "owner",
    "sieve",
    "create_folders",
    "home",
    "uid",
    "gid",
    "mail",
    "quota_rule",
)
"""Fields a user row may carry; ``mail`` and ``quota_rule`` are Dovecot's spellings of path and quota."""
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class SourceSettings:
    """One ``userdb:`` entry. ``options`` holds the driver's own keys, already checked."""

    driver: str
    index: int
    timeout: float = DEFAULT_TIMEOUT
    path: Path | None = None
    key: str = "address"
    url: str = ""
    password_file: Path | None = None
    user_query: str = ""
    alias_query: str = ""
    path_base: Path | None = None
    pool_size: int = 4
    socket: Path | None = None
    service: str = "lmtp"
    bind_dn: str = ""
    base: str = ""
    filter: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    alias_field: str = ""

    @property
    def label(self) -> str:
        """How logs and ``mda resolve`` name this source (never a password)."""
        if self.driver == "passwd-file":
            return f"passwd-file {self.path}"
        if self.driver == "dovecot":
            return f"dovecot {self.socket}"
        return f"{self.driver} {redact_url(self.url)}"


def read_password_file(path: Path | None, owner: str) -> str | None:
    """The password in ``password_file`` (surrounding white space stripped), or None without one.

    An unreadable file raises ``OSError`` whose ``strerror`` names ``owner`` (the source, or ``state:``)
    and the file, so start-up, a reload and the commands say which setting to fix."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as error:
        raise OSError(error.errno, f"{owner}: password_file {path}: {error.strerror}") from None


@dataclass(frozen=True)
class CacheSettings:
    ttl: float = 60.0
    negative_ttl: float = 10.0
    size: int = 100_000


@dataclass(frozen=True)
class UserdbSettings:
    sources: tuple[SourceSettings, ...] = ()
    cache: CacheSettings = field(default_factory=CacheSettings)


def redact_url(url: str) -> str:
    """``scheme://user:secret@host`` without its password."""
    return re.sub(r"^([a-z0-9+]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


_LITERAL_OR_NAME = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![:\w]):([A-Za-z_]\w*)")


def query_placeholders(query: str) -> list[str]:
    """The ``:name`` placeholders of a query, outside quoted text, not ``::type`` casts."""
    return [m.group(1) for m in _LITERAL_OR_NAME.finditer(query) if m.group(1)]


def _query(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a query (a non-empty string)")
    unknown = [name for name in query_placeholders(value) if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder :{unknown[0]}; known: {', '.join(':' + p for p in PLACEHOLDERS)}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value):
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "passwd-file": ("path", "key"),
    "sql": ("url", "password_file", "user_query", "alias_query", "path_base", "pool_size"),
    "dovecot": ("socket", "service", "key"),
    "ldap": ("url", "bind_dn", "password_file", "base", "filter", "fields", "alias_field", "path_base"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "passwd-file": ("path",),
    "sql": ("url",),
    "dovecot": ("socket",),
    "ldap": ("url", "base", "filter"),
}


def parse_sources(base_dir: Path) -> Callable[[Any], tuple[SourceSettings, ...]]:
    """The converter of ``userdb:``: a list of mappings, each with a known ``driver`` and its keys."""

    def convert(value: Any) -> tuple[SourceSettings, ...]:
        if not isinstance(value, list):
            raise ValueError("expected a list of sources, each a mapping with a driver")
        return tuple(_source(base_dir, index, item) for index, item in enumerate(value))

    return convert


def _source(base_dir: Path, index: int, item: Any) -> SourceSettings:
    where = f"item {index + 1}"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a mapping with a driver")
    driver = item.get("driver")
    if driver not in DRIVERS:
        raise ValueError(f"{where}: driver must be one of {', '.join(DRIVERS)}; got {driver!r}")
    allowed = {"driver", "timeout", *_SOURCE_KEYS[driver]}
    for key in item:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} for driver {driver}")
    for key in _REQUIRED[driver]:
        if key not in item:
            raise ValueError(f"{where}: {key}: required for driver {driver}")
    values: dict[str, Any] = {"driver": driver, "index": index}
    try:
        if "timeout" in item:
            values["timeout"] = parse_duration(item["timeout"])
            if values["timeout"] <= 0:
                raise ValueError("timeout must be more than 0")
        for key in ("path", "password_file", "path_base", "socket"):
            if key in item:
                values[key] = base_dir / _text(item[key])
        if "key" in item:
            if item["key"] not in ("address", "local"):
                raise ValueError("key must be address or local")
            values["key"] = item["key"]
        if "service" in item:
            values["service"] = _text(item["service"])
            if any(c in values["service"] for c in "\t\x01"):
                raise ValueError("service: no TAB")
        if "url" in item:
            values["url"] = _ldap_url(item["url"]) if driver == "ldap" else _url(item["url"])
        for key in ("bind_dn", "base", "alias_field"):
            if key in item:
                values[key] = _text(item[key])
        if "filter" in item:
            values["filter"] = _filter(item["filter"])
        if "fields" in item:
            values["fields"] = _fields(item["fields"])
        for key in ("user_query", "alias_query"):
            if key in item:
                values[key] = _query(item[key])
        if "pool_size" in item:
            size = item["pool_size"]
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
                raise ValueError("pool_size must be a whole number from 1 to 100")
            values["pool_size"] = size
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if driver == "sql" and not values.get("user_query") and not values.get("alias_query"):
        raise ValueError(f"{where}: a sql source needs user_query, alias_query or both")
    return SourceSettings(**values)


SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def _url(value: Any) -> str:
    text = _text(value)
    scheme = text.partition("://")[0]
    if scheme not in SQL_SCHEMES or "://" not in text:
        raise ValueError(f"url must start with sqlite:///, postgresql:// or mysql:// (got {redact_url(text)!r})")
    if scheme == "sqlite" and not text.startswith("sqlite:///"):
        raise ValueError("a SQLite url is sqlite:///path/to/file (three slashes, then the path)")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None:
        raise ValueError("a postgresql url needs psycopg: pip install 'mda[postgresql]'")
    if scheme in ("mysql", "mariadb") and importlib.util.find_spec("pymysql") is None:
        raise ValueError("a mysql url needs PyMySQL: pip install 'mda[mysql]'")
    return text


_FILTER_NAMES = re.compile(r"\{([^{}]*)\}")


def _filter(value: Any) -> str:
    text = _text(value)
    unknown = [name for name in _FILTER_NAMES.findall(text) if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"filter: unknown placeholder {{{unknown[0]}}}; known: {', '.join(PLACEHOLDERS)}")
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError("filter: an LDAP filter in parentheses, like (mail={address})")
    return text


def _fields(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError("fields: a mapping of user field to attribute name, like {path: mailMessageStore}")
    for name, attribute in value.items():
        if name not in ROW_FIELDS:
            raise ValueError(f"fields: unknown field {name!r}; known: {', '.join(ROW_FIELDS)}")
        _text(attribute)
    return {str(name): str(attribute) for name, attribute in value.items()}


def _ldap_url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("ldap://", "ldaps://", "ldapi://")):
        raise ValueError("url must start with ldap://, ldaps:// or ldapi://")
    if importlib.util.find_spec("ldap3") is None:
        raise ValueError("driver ldap needs ldap3: pip install 'mda[ldap]'")
    return text


def parse_cache(value: Any) -> CacheSettings:
    if value is None:
        return CacheSettings()
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping like {ttl: 60s, negative_ttl: 10s}")
    unknown = set(value) - {"ttl", "negative_ttl", "size"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; known: ttl, negative_ttl, size")
    size = value.get("size", CacheSettings.size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("size must be a whole number, 0 or more")
    return CacheSettings(
        ttl=parse_duration(value.get("ttl", CacheSettings.ttl)),
        negative_ttl=parse_duration(value.get("negative_ttl", CacheSettings.negative_ttl)),
        size=size,
    )


def source_document(source: SourceSettings) -> dict[str, Any]:
    """One source as ``check-config --print`` writes it."""
    document: dict[str, Any] = {"driver": source.driver, "timeout": f"{source.timeout:g}s"}
    for key in _SOURCE_KEYS[source.driver]:
        value = getattr(source, key)
        if value in ("", None):
            continue
        document[key] = str(value) if isinstance(value, Path) else value
    return document
