"""Self-signed certificates made with the openssl command, for the tests that speak TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(cert: Path, key: Path, name: str = "mx.example.test") -> tuple[Path, Path]:
    """Write a fresh RSA key and a certificate for ``name`` (valid two days) to ``cert`` and ``key``."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
