"""Fixtures for protocol tests: a self-signed certificate, a credentials file, TLS client contexts."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest

from tests.certificates import self_signed

PASSWORD = "s3cret pass"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for mx.example.test made with the openssl CLI (cert, key)."""
    directory = tmp_path_factory.mktemp("tls")
    return self_signed(directory / "cert.pem", directory / "key.pem")


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "credentials"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"# user:hash\nalice:{hashed}\nplain:not-a-hash\n")
    return path


def client_context() -> ssl.SSLContext:
    """A client context that trusts anything: the tests check the server, not the PKI."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
