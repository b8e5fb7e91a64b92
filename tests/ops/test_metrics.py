"""Metrics: defined once in a factory, bounded labels, and counters that move exactly with deliveries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mda.metrics import Metrics, build_metrics
from mda.replies import Reply, result_of
from tests.clients import Client
from tests.conftest import basic_config
from tests.ops.helpers import deliver, fetch, metrics_url, scrape, value
from tests.peers import programs


def test_factory_builds_twice_in_separate_registries() -> None:
    first = build_metrics(CollectorRegistry())
    second = build_metrics(CollectorRegistry())
    assert isinstance(first, Metrics) and isinstance(second, Metrics)
    registry = CollectorRegistry()
    build_metrics(registry)
    with pytest.raises(ValueError):
        build_metrics(registry)


def test_hot_path_children_are_cached() -> None:
    metrics = build_metrics(CollectorRegistry())
    metrics.delivery(250, "2.0.0", "maildir")
    child = metrics._children[(id(metrics.deliveries), "delivered", "2.0.0", "maildir")]
    metrics.delivery(250, "2.0.0", "maildir")
    assert metrics._children[(id(metrics.deliveries), "delivered", "2.0.0", "maildir")] is child
    assert child._value.get() == 2


@pytest.mark.parametrize(
    ("code", "result"),
    [(250, "delivered"), (354, "delivered"), (451, "tempfail"), (452, "tempfail"), (550, "permfail")],
)
def test_result_of_reply_code(code: int, result: str) -> None:
    """The metrics' ``result`` label and the logs' ``status`` field classify a code the same way."""
    assert result_of(code) == result
    assert Reply(code, "", "text").status == result


def test_quota_refusals_counted_at_rcpt_and_data() -> None:
    registry = CollectorRegistry()
    metrics = build_metrics(registry)
    metrics.recipient_refused("5.2.2")
    metrics.delivery(452, "4.2.2", "maildir")
    metrics.recipient_refused("5.1.1")
    assert registry.get_sample_value("mda_quota_refusals_total", {"stage": "rcpt"}) == 1
    assert registry.get_sample_value("mda_quota_refusals_total", {"stage": "data"}) == 1
    assert registry.get_sample_value("mda_rcpt_refused_total", {"reason": "unknown_user", "enhanced": "5.1.1"}) == 1


def test_config_hash_gauge_moves_to_the_new_hash() -> None:
    registry = CollectorRegistry()
    metrics = build_metrics(registry)
    metrics.config_loaded_now("aaaa")
    metrics.config_loaded_now("bbbb")
    assert registry.get_sample_value("mda_config_info", {"hash": "aaaa"}) == 0
    assert registry.get_sample_value("mda_config_info", {"hash": "bbbb"}) == 1
    assert registry.get_sample_value("mda_config_loaded_timestamp_seconds") > 0
    text = generate_latest(registry).decode()
    assert 'mda_build_info{python="' in text


def test_counters_follow_deliveries_exactly(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    before = scrape(server)
    assert value(before, "mda_deliveries_total") == 0
    assert deliver(server.lmtp, ["alice@example.test", "nobody@example.test", "bob@example.test"]) == [250, 250]
    assert deliver(server.smtp, ["carol@example.test"], lmtp=False) == [250]
    after = scrape(server)
    assert value(after, "mda_deliveries_total", result="delivered", enhanced="2.0.0", format="maildir") == 3
    assert value(after, "mda_deliveries_total", result="permfail") == 0
    assert value(after, "mda_rcpt_refused_total", reason="unknown_user") == 1
    assert value(after, "mda_messages_received_total", protocol="lmtp") == 1
    assert value(after, "mda_messages_received_total", protocol="smtp") == 1
    assert value(after, "mda_received_bytes_total") > 0
    assert value(after, "mda_delivery_duration_seconds_count", protocol="lmtp") == 1
    assert value(after, "mda_storage_fsync_seconds_count", format="maildir") == 3
    assert value(after, "mda_storage_write_seconds_count", format="maildir") == 3
    assert value(after, "mda_message_size_bytes_count") == 2
    assert value(after, "mda_sessions_total") == 2
    assert value(after, "mda_sessions_open") == 0
    assert value(after, "mda_build_info") == 1
    assert not any("@" in "".join(v for _, v in labels) for (_, labels) in after), "an address leaked into a label"


def test_refused_connections_are_counted_by_reason(start_mda, tmp_path: Path) -> None:
    listeners = [
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "allow": ["10.0.0.0/8"]},
        {"protocol": "lmtp", "bind": "127.0.0.1:0", "limits": {"max_connections_per_client": 1}},
        {"protocol": "smtp", "bind": "127.0.0.1:0", "limits": {"max_connections": 1}},
    ]
    # One process: connection limits count per worker process (README, "Workers").
    config = basic_config(tmp_path / "mail", listeners=listeners, metrics={"bind": "127.0.0.1:0"}, workers=1)
    server = start_mda(config)
    denied, limited = server.tcp["lmtp"]
    with Client(denied) as client:
        assert client.greeting.code == 554
    with Client(limited) as first:
        assert first.greeting.code == 220
        with Client(limited) as second:
            assert second.greeting.code == 421
        with Client(server.smtp) as third:  # one session open in the process: the SMTP total is reached
            assert third.greeting.code == 421
    samples = scrape(server)
    for reason in ("not_allowed", "max_connections_per_client", "max_connections"):
        assert value(samples, "mda_connections_refused_total", reason=reason) == 1, reason
    assert value(samples, "mda_sessions_total") == 1


def test_start_up_lines_order_and_probes(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    kinds = [line.split(" ", 1)[0] for line in server.lines]
    assert kinds == ["listening", "listening", "metrics", "delivering"]
    assert metrics_url(server).startswith("http://127.0.0.1:") and not metrics_url(server).endswith(":0/metrics")
    base = metrics_url(server).removesuffix("/metrics")
    assert fetch(base + "/healthz")[0] == 200
    assert fetch(base + "/readyz") == (200, "ready\n")
    assert fetch(base + "/nothing")[0] == 404


@pytest.mark.root
@pytest.mark.parametrize("workers", [1, 2])
def test_exposition_passes_promtool(start_mda, tmp_path: Path, workers: int) -> None:
    promtool = programs.require(programs.PROMTOOL)
    server = start_mda(basic_config(tmp_path / "mail", workers=workers, metrics={"bind": "127.0.0.1:0"}))
    deliver(server.lmtp, ["alice@example.test", "nobody@example.test"])
    _, text = fetch(metrics_url(server))
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
