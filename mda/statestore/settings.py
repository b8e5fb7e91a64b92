"""The ``state:`` configuration key: where duplicate-suppression and vacation records live.

``""`` (the default) keeps them in SQLite files under ``state_dir``; a ``postgresql://`` URL puts them in
one database that several mda instances share. The mapping form adds ``password_file``, ``timeout`` and
``pool_size`` with the meaning they have for a ``userdb`` sql source. Parsed here without importing a
database client, so ``mda.config`` can validate it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mda.units import parse_duration
from mda.userdb.settings import DEFAULT_TIMEOUT, redact_url

_KEYS = ("url", "password_file", "timeout", "pool_size")


@dataclass(frozen=True)
class StateSettings:
    url: str = ""
    password_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    pool_size: int = 4

    @property
    def shared(self) -> bool:
        """True when the records live in PostgreSQL rather than in ``state_dir``."""
        return bool(self.url)

    @property
    def label(self) -> str:
        return f"postgresql {redact_url(self.url)}" if self.url else "sqlite"


def parse_state(base_dir: Path) -> Any:
    """The converter of ``state:``: a URL string, or a mapping with ``url`` and its options."""

    def convert(value: Any) -> StateSettings:
        if value is None or value == "":
            return StateSettings()
        if isinstance(value, str):
            return StateSettings(url=_url(value))
        if not isinstance(value, Mapping):
            raise ValueError('expected "" or a postgresql:// URL, or a mapping with url and password_file')
        unknown = [key for key in value if key not in _KEYS]
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; known: {', '.join(_KEYS)}")
        url = value.get("url", "")
        if url in ("", None):
            if any(key != "url" for key in value):
                raise ValueError("url: required with password_file, timeout or pool_size")
            return StateSettings()
        settings: dict[str, Any] = {"url": _url(url)}
        if "password_file" in value:
            name = value["password_file"]
            if not isinstance(name, str) or not name:
                raise ValueError("password_file: expected a path")
            settings["password_file"] = base_dir / name
        if "timeout" in value:
            settings["timeout"] = parse_duration(value["timeout"])
            if settings["timeout"] <= 0:
                raise ValueError("timeout must be more than 0")
        if "pool_size" in value:
            size = value["pool_size"]
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
                raise ValueError("pool_size must be a whole number from 1 to 100")
            settings["pool_size"] = size
        return StateSettings(**settings)

    return convert


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            f'expected "" (SQLite files in state_dir) or a postgresql:// URL, got {redact_url(str(value))!r}'
        )
    if any(ord(c) < 32 for c in value):
        raise ValueError("the URL must not contain control characters")
    if importlib.util.find_spec("psycopg") is None:
        raise ValueError("a postgresql url needs psycopg: pip install 'mda[postgresql]'")
    return value


def state_document(settings: StateSettings) -> str | dict[str, Any]:
    """``state:`` as ``check-config --print`` writes it."""
    if not settings.shared:
        return ""
    document: dict[str, Any] = {
        "url": settings.url,
        "timeout": f"{settings.timeout:g}s",
        "pool_size": settings.pool_size,
    }
    if settings.password_file is not None:
        document["password_file"] = str(settings.password_file)
    return document
