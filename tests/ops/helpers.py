"""Helpers shared by the operations tests: scrape ``/metrics`` and read samples by name and labels."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.clients import Client, transaction
from tests.mdaproc import RunningServer

MESSAGE = b"From: a@example.net\r\nTo: b@example.test\r\nSubject: ops\r\n\r\nhello\r\n"


def metrics_url(server: RunningServer) -> str:
    for line in server.lines:
        if line.startswith("metrics "):
            return line.split(" ", 1)[1]
    raise AssertionError(f"no metrics line in {server.lines}")


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    status, text = fetch(metrics_url(server))
    assert status == 200
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= set(sample_labels))


def deliver(address: tuple[str, int] | str, recipients: list[str], *, lmtp: bool = True) -> list[int]:
    """One transaction; returns the DATA reply codes (one per accepted RCPT in LMTP)."""
    with Client(address) as client:
        client.cmd("LHLO client.example" if lmtp else "EHLO client.example")
        _, data = transaction(client, "sender@example.net", recipients, MESSAGE, lmtp=lmtp)
        client.cmd("QUIT")
    return [reply.code for reply in data]


def stored_files(root: Path, user: str, domain: str = "example.test") -> list[Path]:
    new = root / domain / user / "Maildir" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []
