"""Each configuration key is declared once (``mda.config.setting``): its default, its converter and its
printed form come from that declaration, so an absent key loads to the declared default, ``check-config
--print`` writes back every key a section has, and a bad value of an enumerated key is refused naming
the values allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mda.config import (
    Config,
    DomainConfig,
    Limits,
    ListenerConfig,
    MailboxSettings,
    SieveConfig,
    StorageConfig,
    key_fields,
    load,
)
from mda.enums import BareNewline, LogFormat, LogLevel, Protocol, StorageFormat, TlsMode
from mda.storage.base import Mailbox
from tests.clients import Client
from tests.conftest import basic_config


def run_mda(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mda", *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_an_absent_key_loads_to_its_declared_default(tmp_path: Path) -> None:
    config_path = write(
        tmp_path / "mda.yaml",
        {
            "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}],
            "domains": {"example.test": {}},
            "users": {"alice@example.test": {}},
            "sieve": {},
        },
    )
    config = load(config_path)
    assert config.sieve is not None
    loaded: list[tuple[type[Any], Any]] = [
        (Config, config),
        (Limits, config.limits),
        (StorageConfig, config.storage),
        (ListenerConfig, config.listeners[0]),
        (Limits, config.listeners[0].limits),
        (DomainConfig, config.domains["example.test"]),
        (MailboxSettings, config.domains["example.test"].mailbox),
        (MailboxSettings, config.users["alice@example.test"]),
        (SieveConfig, config.sieve),
    ]
    checked = 0
    for cls, settings in loaded:
        for field in key_fields(cls):
            if field.name in ("hostname", "protocol", "bind"):  # the machine's name; required keys
                continue
            assert getattr(settings, field.name) == field.default, f"{cls.__name__}.{field.name}"
            checked += 1
    assert checked > 50
    # The storage layer's own defaults are the storage section's, not a copy of them.
    mailbox = Mailbox(format=StorageFormat.MBOX, path=tmp_path / "mbox")
    for name in ("fsync", "lock_timeout", "quota_full_tempfail"):
        assert getattr(mailbox, name) == getattr(config.storage, name), name


def test_enumerated_settings_load_as_their_members(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    config = load(
        write(
            tmp_path / "mda.yaml",
            basic_config(
                tmp_path / "mail",
                listeners=[
                    {"protocol": "smtp", "bind": "127.0.0.1:0", "tls": {"cert": str(cert), "key": str(key)}},
                    {"protocol": "policy", "bind": "127.0.0.1:0"},
                ],
                domains={"example.test": {"format": "mbox"}},
                storage={"path": f"{tmp_path}/{{user}}", "format": "maildir"},
                bare_newline="normalize",
                log_format="json",
                log_level="debug",
            ),
        )
    )
    smtp, policy = config.listeners
    assert (smtp.protocol, policy.protocol) == (Protocol.SMTP, Protocol.POLICY)
    assert smtp.tls is not None and smtp.tls.mode is TlsMode.STARTTLS
    assert config.storage.format is StorageFormat.MAILDIR
    assert config.domains["example.test"].mailbox.format is StorageFormat.MBOX
    assert (config.bare_newline, config.log_format, config.log_level) == (
        BareNewline.NORMALIZE,
        LogFormat.JSON,
        LogLevel.DEBUG,
    )


HEAD = "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\n"


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        (HEAD + "storage: {format: maildirs}\n", "storage.format", "maildir, mbox"),
        (
            "listeners: [{protocol: LMTP, bind: '127.0.0.1:0'}]\ndomains: [a.test]\n",
            "listeners[0].protocol",
            "lmtp, smtp, policy",
        ),
        (
            "listeners: [{protocol: smtp, bind: '127.0.0.1:0', tls: {cert: c, key: k, mode: tls}}]\n"
            "domains: [a.test]\n",
            "listeners[0].tls.mode",
            "starttls, implicit",
        ),
        (HEAD + "bare_newline: strip\n", "bare_newline", "reject, normalize"),
        (HEAD + "log_format: [json]\n", "log_format", "text, json"),
        (HEAD + "log_level: verbose\n", "log_level", "debug, info, warning, error"),
        (
            "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: {a.test: {format: 1}}\n",
            "domains.a.test.format",
            "maildir, mbox",
        ),
        (HEAD + "users: {x@a.test: {format: true}}\n", "users.x@a.test.format", "maildir, mbox"),
    ],
)
def test_a_bad_enumerated_value_is_refused_naming_the_allowed_ones(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:"), result.stderr
    assert f": {key}: must be one of {allowed}; got " in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc%", "expected a percentage like 1% or a size like 500M, got 'abc%'"),
        ("lots", "expected a percentage like 1% or a size like 500M, got 'lots'"),
        ("100%", "a percentage must be between 0% and 100%"),
    ],
)
def test_a_bad_free_space_reserve_is_refused_saying_what_it_takes(tmp_path: Path, value: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(HEAD + f"free_space_reserve: '{value}'\n")
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{config}:3: free_space_reserve: {message}", result.stderr


def test_print_writes_back_every_listener_key_and_the_dsn_size_limit(start_mda, tmp_path: Path) -> None:
    """``proxy_trusted``, ``success_dsn`` and ``dsn_size_limit`` survive ``check-config --print``: a server
    run from the printed file behaves as one run from the original (no ``DSN`` where it was turned off)."""
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "proxy_protocol": True, "proxy_trusted": ["127.0.0.1/32"]},
        {"protocol": "smtp", "bind": "127.0.0.1:0", "success_dsn": False},
    ]
    original = basic_config(
        tmp_path / "mail", listeners=listeners, submission={"host": "127.0.0.1", "port": 25}, dsn_size_limit="10K"
    )
    printed = run_mda("check-config", "--print", "--config", str(write(tmp_path / "mda.yaml", original)))
    assert printed.returncode == 0, printed.stderr
    document = yaml.safe_load(printed.stdout)
    lmtp, smtp = document["listeners"]
    assert (lmtp["proxy_trusted"], lmtp["success_dsn"], smtp["success_dsn"]) == (["127.0.0.1/32"], True, False)
    assert document["dsn_size_limit"] == 10 * 1024
    server = start_mda(document)
    with Client(server.smtp) as client:
        assert "DSN" not in client.cmd("EHLO client.test").lines
