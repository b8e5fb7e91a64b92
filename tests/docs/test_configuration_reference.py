"""docs/configuration.md names every key the configuration loader accepts, and no key it refuses.

The keys are not listed here by hand: the test loads ``FULL_CONFIG`` (every section present once) and
records each key that ``mda/config.py`` reads from each section, present or not (every read of a key,
``get``, ``convert`` or ``sub``, marks it as accepted; anything else is an "unknown key" error). A key
added to an existing section is therefore caught without touching this file. A new *section* (a new
mapping, e.g. a new per-listener block) is read only when present: add one instance of it to
``FULL_CONFIG``, and its keys are checked from then on.

The reference names each key in the first column of a table row, as a dotted path in backquotes:
``storage.max_folders``, ``listeners[].tls.cert``, ``domains.DOMAIN.passwd``, ``users.ADDRESS.quota``.
Its type and default columns are checked against each key's declaration (``mda.config.setting``): the
first backquoted value of the default column, read with the key's own converter, is the declared default,
and an enumerated key's type column names every value its ``StrEnum`` allows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml

from mda import config as config_module
from mda import enums

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"

FULL_CONFIG: dict[str, Any] = {
    "hostname": "mx.example.test",
    "listeners": [
        {
            "protocol": "smtp",
            "bind": "127.0.0.1:0",
            "allow": ["127.0.0.0/8"],
            "tls": {"cert": "cert.pem", "key": "key.pem"},
            "auth": {"users_file": "passwords"},
            "proxy_protocol": True,
            "proxy_trusted": ["127.0.0.1"],
            "limits": {"max_message_size": "1M"},
        },
        {"protocol": "lmtp", "bind": "unix:/run/mda-test/lmtp.sock", "socket_mode": "0660"},
    ],
    "domains": {"example.test": {"quota": "1G"}, "users.example.test": {"passwd": True, "first_valid_uid": 1000}},
    "storage": {"path": "/var/vmail/{domain}/{user}/Maildir"},
    "users": {"alice@example.test": {"quota": "2G"}},
    "users_file": "users.yaml",
    "aliases": {"postmaster@example.test": "alice@example.test"},
    "limits": {"max_recipients": 100},
    "metrics": {"bind": "127.0.0.1:0"},
    "submission": {"host": "127.0.0.1"},
    "sieve": {
        "before": ["before.sieve"],
        "spamtest": {"status_header": "X-Spam-Score", "max_value": 10},
        "virustest": {"status_header": "X-Virus: (.*)", "status_type": "text", "text_values": ["clean"]},
    },
}
"""One instance of every section; add one for each new section (see the module docstring)."""

SAME_AS = {"listeners[].limits.": "limits.", "sieve.virustest.": "sieve.spamtest."}
"""Sections documented once under another name: a listener's ``limits`` take the keys of ``limits``."""


def _generic(doc_name: str, users_file: str, path: tuple[Any, ...]) -> str:
    """A section's path as the reference names it: list items ``[]``, domains and users by role."""
    if doc_name == users_file:
        path = ("users", *path)
    parts: list[str] = []
    for index, part in enumerate(path):
        if isinstance(part, int):
            parts[-1] += "[]"
        elif index == 1 and path[0] == "domains":
            parts.append("DOMAIN")
        elif index == 1 and path[0] == "users":
            parts.append("ADDRESS")
        else:
            parts.append(str(part))
    return ".".join(parts)


def accepted_keys(directory: Path) -> set[str]:
    """Every key ``mda/config.py`` reads when it loads ``FULL_CONFIG``, as dotted paths."""
    (directory / "users.yaml").write_text("bob@example.test: {quota: 1G}\n")
    path = directory / "mda.yaml"
    path.write_text(yaml.safe_dump(FULL_CONFIG))
    users_file = str(directory / "users.yaml")
    sections: dict[str, set[str]] = {}
    original = config_module._Section.finish

    def recording_finish(section: Any) -> None:
        name = _generic(section.doc.name, users_file, tuple(section.path))
        if name != "users":  # the keys of ``users:`` and of the users file are addresses
            sections.setdefault(name, set()).update(section.used)
        original(section)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config_module._Section, "finish", recording_finish)
        config_module.load(path)
    return {f"{section}.{key}" if section else key for section, used in sections.items() for key in used}


def _leaves(keys: set[str]) -> set[str]:
    """The keys that hold values; a key that is itself a section is documented through its own keys."""
    return {key for key in keys if not any(other.startswith((key + ".", key + "[")) for other in keys)}


def _rows() -> Iterator[tuple[str, str, str]]:
    """(key, type, default) of each table row that documents a key."""
    for line in REFERENCE.read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            yield match.group(1), cells[1], cells[2]


def _documented() -> Iterator[str]:
    for key, _, _ in _rows():
        yield key


def _as_documented(key: str) -> str:
    for prefix, documented in SAME_AS.items():
        if key.startswith(prefix):
            return documented + key[len(prefix) :]
    return key


def test_every_accepted_key_is_in_the_reference(tmp_path: Path) -> None:
    missing = sorted({_as_documented(key) for key in _leaves(accepted_keys(tmp_path))} - set(_documented()))
    assert not missing, f"keys accepted by mda/config.py but missing from docs/configuration.md: {missing}"


def test_the_reference_names_no_key_the_loader_refuses(tmp_path: Path) -> None:
    accepted = {_as_documented(key) for key in accepted_keys(tmp_path)}
    stale = sorted(set(_documented()) - accepted)
    assert not stale, f"docs/configuration.md documents keys mda/config.py does not accept: {stale}"


def test_the_recording_sees_nested_sections(tmp_path: Path) -> None:
    """A guard on the recording itself: if the loader changed shape, this says so plainly."""
    keys = _leaves(accepted_keys(tmp_path))
    for key in (
        "hostname",
        "storage.max_folders",
        "listeners[].tls.cert",
        "domains.DOMAIN.passwd",
        "users.ADDRESS.quota",
    ):
        assert key in keys, sorted(keys)


SECTIONS: dict[str, tuple[type[Any], ...]] = {
    "": (config_module.Config,),
    "limits.": (config_module.Limits,),
    "listeners[].": (config_module.ListenerConfig,),
    "listeners[].tls.": (config_module.TlsSettings,),
    "listeners[].auth.": (config_module.AuthSettings,),
    "domains.DOMAIN.": (config_module.DomainConfig, config_module.MailboxSettings),
    "users.ADDRESS.": (config_module.MailboxSettings,),
    "storage.": (config_module.StorageConfig,),
    "metrics.": (config_module.MetricsConfig,),
    "submission.": (config_module.SubmissionConfig,),
    "sieve.": (config_module.SieveConfig,),
}
"""The dataclass that declares the keys of each documented section."""

NOT_A_VALUE = {"hostname": "the machine's name, filled in at load when the key is absent"}
"""Keys whose declared default is a placeholder, documented in words."""


def _declarations() -> dict[str, dataclasses.Field[Any]]:
    """Every declared key by its documented name."""
    declared: dict[str, dataclasses.Field[Any]] = {}
    for prefix, classes in SECTIONS.items():
        for cls in classes:
            for field in config_module.key_fields(cls):
                declared.setdefault(prefix + field.name, field)
    return declared


def _converter(field: dataclasses.Field[Any], directory: Path) -> Any:
    return field.metadata["parse"] or field.metadata["in_dir"](directory)


def _first_value(cell: str) -> Any:
    """The first backquoted value of a cell, as YAML reads it (or as text when it is no YAML)."""
    match = re.search(r"`([^`]*)`", cell)
    if match is None:
        return None
    try:
        return yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return match.group(1)


def test_the_reference_defaults_are_the_declared_ones(tmp_path: Path) -> None:
    declared = _declarations()
    wrong: list[str] = []
    compared = 0
    for key, _, default_cell in _rows():
        field = declared.get(key)
        if field is None or field.default in (None, (), dataclasses.MISSING) or key in NOT_A_VALUE:
            continue
        written = _first_value(default_cell)
        try:
            documented = _converter(field, tmp_path)(written)
        except (TypeError, ValueError) as error:
            wrong.append(f"{key}: the default column {default_cell!r} is not a value ({error})")
            continue
        compared += 1
        if documented != field.default:
            wrong.append(f"{key}: documented {default_cell}, declared {field.default!r}")
    assert not wrong, "\n".join(wrong)
    assert compared >= 35


def _enum_of(field: dataclasses.Field[Any]) -> type[StrEnum] | None:
    annotation = str(field.type)
    candidates = [getattr(enums, name) for name in dir(enums) if not name.startswith("_")]
    kinds = [
        kind for kind in candidates if isinstance(kind, type) and issubclass(kind, StrEnum) and kind is not StrEnum
    ]
    return next((kind for kind in kinds if re.search(rf"\b{kind.__name__}\b", annotation)), None)


def test_the_reference_names_every_value_of_an_enumerated_key() -> None:
    declared = _declarations()
    missing: list[str] = []
    enumerated = 0
    for key, type_cell, _ in _rows():
        field = declared.get(key)
        kind = _enum_of(field) if field is not None else None
        if kind is None:
            continue
        enumerated += 1
        named = set(re.findall(r"`([^`]*)`", type_cell))
        missing += [f"{key}: {member.value}" for member in kind if member.value not in named]
    assert not missing, f"values a key accepts but its type column does not name: {missing}"
    assert enumerated >= 7
