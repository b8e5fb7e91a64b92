"""Every Prometheus metric of mda, defined once, with bounded labels (never an address).

``build_metrics(registry)`` creates the collectors in the given registry, so tests use their own
``CollectorRegistry`` and a second build never collides with the first. Hot-path
children (``.labels(...)`` costs microseconds) are cached per label tuple.

This is the one module that imports ``prometheus_client``, and it does so as it is imported: in
multiprocess mode ``PROMETHEUS_MULTIPROC_DIR`` must be set before that package is first imported (it
picks its value class then). ``mda.serving`` decides the mode before anything that imports this module
is imported; tests/ops/test_metrics_mode.py checks that the commands' modules do not import it. Importing
everything here also loads what ``/metrics`` needs before privileges are dropped.

Labels and their bounds: ``listener`` is a configured bind address (the operator's list), ``protocol``
is ``lmtp``/``smtp``, ``result`` is ``delivered``/``tempfail``/``permfail``, ``enhanced`` is an RFC 3463
enhanced status code (a small fixed set in ``mda.replies``), ``format`` is ``maildir``/``mbox``/``none``,
``reason`` comes from the fixed tables below, ``root`` is the fixed directory of a configured path template.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mda import __version__
from mda.enums import StorageFormat
from mda.metricsdir import MULTIPROC_ENV
from mda.replies import result_of
from mda.space import existing_ancestor

HEARTBEAT_METRIC = "mda_event_loop_heartbeat_timestamp_seconds"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds from end of DATA to the reply: a local delivery takes milliseconds, a sick disk seconds."""
DISK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SIZE_BUCKETS = tuple(float(2**n) for n in range(10, 31, 2))
"""1 KiB to 1 GiB in powers of four."""

RCPT_REASONS = {
    "5.1.1": "unknown_user",
    "5.1.2": "unknown_domain",
    "5.1.3": "bad_address",
    "5.1.6": "moved",
    "5.2.2": "quota",
    "4.2.2": "quota",
    "4.3.1": "disk_full",
    "5.3.4": "too_big",
    "5.7.1": "denied",
    "4.3.0": "lookup_failed",
}
"""Enhanced code → refusal reason at RCPT; anything else counts as ``other``."""
QUOTA_CODES = frozenset({"5.2.2", "4.2.2"})
"""RFC 3463 X.2.2: mailbox full."""
SIEVE_ERROR_KINDS = ("compile", "runtime", "redirect", "vacation")
"""``kind`` of ``mda_sieve_errors_total`` (mda/filtering.py): a script failed, or a send it asked for."""
CONNECTION_REFUSAL_REASONS = ("not_allowed", "max_connections", "max_connections_per_client")
"""``reason`` of ``mda_connections_refused_total`` (mda/server.py)."""
USERDB_DRIVERS = ("passwd-file", "sql", "dovecot", "ldap")
"""``driver`` of the ``mda_userdb_*`` metrics (mda/userdb/settings.py ``DRIVERS``)."""
USERDB_RESULTS = ("hit", "miss", "error")
"""A source found the address, did not, or could not answer (the recipient got 451 4.3.0)."""
FIRST_OUTCOMES = (("delivered", "2.0.0"), ("tempfail", "4.3.0"), ("permfail", "5.2.2"))
"""One (result, enhanced) per result, present at 0 from the start for each storage format.

A series that appears with its first increment is invisible to ``increase()`` and ``rate()`` (there is
no earlier sample to compare with), and an absent one makes ``== 0`` alerts silent: every label value
known in advance is therefore created at 0 when the process starts (see contrib/prometheus)."""


class Metrics:
    """The collectors, plus cached children for the labels the hot path uses."""

    def __init__(self, registry: CollectorRegistry | None, *, multiprocess: bool = False) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.multiprocess = multiprocess
        self.deliveries = Counter(
            "mda_deliveries_total",
            "Recipient outcomes after DATA, by result, enhanced status code and storage format.",
            ["result", "enhanced", "format"],
            **kw,
        )
        self.rcpt_refused = Counter(
            "mda_rcpt_refused_total", "Recipients refused at RCPT, by reason.", ["reason", "enhanced"], **kw
        )
        self.messages_received = Counter(
            "mda_messages_received_total", "Messages received (end of DATA).", ["listener", "protocol"], **kw
        )
        self.bytes_received = Counter(
            "mda_received_bytes_total", "Message bytes received.", ["listener", "protocol"], **kw
        )
        self.delivery_seconds = Histogram(
            "mda_delivery_duration_seconds",
            "Time from end of DATA to the reply, per transaction.",
            ["protocol"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.storage_write_seconds = Histogram(
            "mda_storage_write_seconds", "Time to write one stored copy.", ["format"], buckets=DISK_BUCKETS, **kw
        )
        self.storage_fsync_seconds = Histogram(
            "mda_storage_fsync_seconds", "Time to fsync one stored copy.", ["format"], buckets=DISK_BUCKETS, **kw
        )
        self.message_size = Histogram(
            "mda_message_size_bytes", "Size of received messages.", ["protocol"], buckets=SIZE_BUCKETS, **kw
        )
        self.sessions_open = Gauge(
            "mda_sessions_open",
            "Sessions open now.",
            ["listener", "protocol"],
            multiprocess_mode="livesum",
            **kw,
        )
        self.sessions = Counter("mda_sessions_total", "Sessions accepted.", ["listener", "protocol"], **kw)
        self.connections_refused = Counter(
            "mda_connections_refused_total", "Connections refused at connect, by reason.", ["reason"], **kw
        )
        self.config_reloads = Counter(
            "mda_config_reloads_total", "Configuration reloads, by result (success, failure).", ["result"], **kw
        )
        self.config_info = Gauge(
            "mda_config_info",
            "1 for the hash of the configuration in use.",
            ["hash"],
            multiprocess_mode="livemax",
            **kw,
        )
        self.config_loaded = Gauge(
            "mda_config_loaded_timestamp_seconds",
            "When the configuration in use was loaded (Unix time).",
            multiprocess_mode="livemax",
            **kw,
        )
        self.quota_refusals = Counter(
            "mda_quota_refusals_total", "Recipients refused because a mailbox is full, by stage.", ["stage"], **kw
        )
        self.sieve_errors = Counter(
            "mda_sieve_errors_total",
            "Sieve failures at delivery (the message went to INBOX), by kind: compile, runtime, redirect, vacation.",
            ["kind"],
            **kw,
        )
        for kind in SIEVE_ERROR_KINDS:
            self.sieve_errors.labels(kind)
        self.userdb_lookups = Counter(
            "mda_userdb_lookups_total",
            "Look-ups sent to a userdb source, by driver and result: hit, miss, error (recipient deferred).",
            ["driver", "result"],
            **kw,
        )
        self.userdb_seconds = Histogram(
            "mda_userdb_lookup_seconds", "Time a userdb source took to answer.", ["driver"], buckets=DISK_BUCKETS, **kw
        )
        self.userdb_cache = Counter(
            "mda_userdb_cache_total", "userdb look-ups answered from the cache (hit) or not (miss).", ["result"], **kw
        )
        for driver in USERDB_DRIVERS:
            self.userdb_seconds.labels(driver)
            for result in USERDB_RESULTS:
                self.userdb_lookups.labels(driver, result)
        for result in ("hit", "miss"):
            self.userdb_cache.labels(result)
        self.heartbeat = Gauge(
            HEARTBEAT_METRIC,
            "Last heartbeat of the event loop (Unix time); /healthz fails when it is too old.",
            multiprocess_mode="livemin",
            **kw,
        )
        self.heartbeat.set(time.time())
        self.build_info = Gauge(
            "mda_build_info", "Build information; always 1.", ["version", "python"], multiprocess_mode="max", **kw
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self._initialise_known_labels()
        self._children: dict[tuple[Any, ...], Any] = {}
        self._config_hash: str | None = None

    def _initialise_known_labels(self) -> None:
        """Create at 0 every series whose labels are known before the first event (``FIRST_OUTCOMES``)."""
        for storage_format in StorageFormat:
            for result, enhanced in FIRST_OUTCOMES:
                self.deliveries.labels(result, enhanced, storage_format)
        for enhanced, reason in RCPT_REASONS.items():
            self.rcpt_refused.labels(reason, enhanced)
        for stage in ("rcpt", "data"):
            self.quota_refusals.labels(stage)
        for reason in CONNECTION_REFUSAL_REASONS:
            self.connections_refused.labels(reason)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- what the Reporter records -----------------------------------------------------------------

    def session_opened(self, listener: str, protocol: str) -> None:
        self._child(self.sessions, listener, protocol).inc()
        self._child(self.sessions_open, listener, protocol).inc()

    def session_closed(self, listener: str, protocol: str) -> None:
        self._child(self.sessions_open, listener, protocol).dec()

    def connection_refused(self, reason: str) -> None:
        self._child(self.connections_refused, reason).inc()

    def userdb_lookup(self, driver: str, result: str, seconds: float) -> None:
        self._child(self.userdb_lookups, driver, result).inc()
        self._child(self.userdb_seconds, driver).observe(seconds)

    def userdb_cache_result(self, result: str) -> None:
        self._child(self.userdb_cache, result).inc()

    def recipient_refused(self, enhanced: str) -> None:
        self._child(self.rcpt_refused, RCPT_REASONS.get(enhanced, "other"), enhanced).inc()
        if enhanced in QUOTA_CODES:
            self._child(self.quota_refusals, "rcpt").inc()

    def message_received(self, listener: str, protocol: str, size: int) -> None:
        self._child(self.messages_received, listener, protocol).inc()
        self._child(self.bytes_received, listener, protocol).inc(size)
        self._child(self.message_size, protocol).observe(size)

    def delivery(self, code: int, enhanced: str, storage_format: str) -> None:
        self._child(self.deliveries, result_of(code), enhanced, storage_format).inc()
        if enhanced in QUOTA_CODES:
            self._child(self.quota_refusals, "data").inc()

    def stored(self, storage_format: str, write_seconds: float, fsync_seconds: float) -> None:
        self._child(self.storage_write_seconds, storage_format).observe(write_seconds)
        self._child(self.storage_fsync_seconds, storage_format).observe(fsync_seconds)

    def sieve_error(self, kind: str) -> None:
        self._child(self.sieve_errors, kind if kind in SIEVE_ERROR_KINDS else "runtime").inc()

    def replied(self, protocol: str, seconds: float) -> None:
        self._child(self.delivery_seconds, protocol).observe(seconds)

    def config_reloaded(self, ok: bool) -> None:
        self._child(self.config_reloads, "success" if ok else "failure").inc()

    def beat(self) -> float:
        """The event loop is running: record it for ``/healthz``; returns the time recorded."""
        now = time.time()
        self.heartbeat.set(now)
        return now

    def config_loaded_now(self, digest: str) -> None:
        """Show ``digest`` as the configuration in use (the previous one drops to 0)."""
        if self._config_hash is not None and self._config_hash != digest:
            self._child(self.config_info, self._config_hash).set(0)
        self._child(self.config_info, digest).set(1)
        self._config_hash = digest
        self.config_loaded.set(time.time())


def build_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """The metrics of one process: in ``registry`` (tests), else the default one.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) values go to files in that directory and
    only the supervisor's exposition aggregates them; collectors are then registered nowhere.
    """
    multiprocess = bool(os.environ.get(MULTIPROC_ENV))
    if registry is None and not multiprocess:
        registry = REGISTRY
    return Metrics(None if multiprocess and registry is None else registry, multiprocess=multiprocess)


def exposition_registry() -> CollectorRegistry:
    """The registry ``/metrics`` serves: the default one, or every worker's files aggregated."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
        return registry
    return REGISTRY


class ScrapeCollector:
    """Values read when ``/metrics`` is scraped, by the process that serves it.

    ``mda_storage_*``: the free space mda itself checks at RCPT (``statvfs``, mda/space.py), per mail
    root (the fixed directory in front of a path template, see ``space.mail_roots``), so that alerts
    need no node_exporter and no guess of the mount point. Free bytes are those available to
    unprivileged users (``f_bavail``), as the RCPT check counts them. Inode gauges are left out for
    file systems without an inode table (``f_files == 0``, e.g. btrfs). A root that does not exist yet
    is measured on its nearest existing parent, where its first mailbox will be created.

    ``mda_start_time_seconds``: when this process started serving; unlike the configuration's load
    time, a reload does not move it, so "nothing delivered since start" alerts keep their timer.
    """

    def __init__(self, roots: Callable[[], Iterable[Path]]) -> None:
        self.roots = roots
        self.started = time.time()

    def collect(self) -> Iterator[Any]:
        start = GaugeMetricFamily(
            "mda_start_time_seconds", "When this mda instance started (Unix time); reloads do not move it."
        )
        start.add_metric([], self.started)
        yield start
        gauges = {
            name: GaugeMetricFamily(name, text, labels=["root"])
            for name, text in (
                ("mda_storage_free_bytes", "Bytes free for unprivileged users on the mail root's file system."),
                ("mda_storage_size_bytes", "Size in bytes of the mail root's file system."),
                ("mda_storage_free_inodes", "Inodes free for unprivileged users on the mail root's file system."),
                ("mda_storage_inodes", "Inodes of the mail root's file system."),
            )
        }
        for root in self.roots():
            try:
                stat = os.statvfs(existing_ancestor(root))
            except OSError:
                continue
            label = [str(root)]
            gauges["mda_storage_free_bytes"].add_metric(label, stat.f_bavail * stat.f_frsize)
            gauges["mda_storage_size_bytes"].add_metric(label, stat.f_blocks * stat.f_frsize)
            if stat.f_files:
                gauges["mda_storage_free_inodes"].add_metric(label, stat.f_favail)
                gauges["mda_storage_inodes"].add_metric(label, stat.f_files)
        yield from gauges.values()


def process_dead(pid: int) -> None:
    """A worker exited: drop its live gauges from the aggregation (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in prometheus_client


def exposition_with(roots: Callable[[], Iterable[Path]]) -> Callable[[], tuple[bytes, str]]:
    """What ``/metrics`` serves (body, content type): this process's values, or every worker's
    aggregated, then the values read at scrape time (``ScrapeCollector``) for the mail roots ``roots``."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(ScrapeCollector(roots))

    def exposition() -> tuple[bytes, str]:
        return generate_latest(exposition_registry()) + generate_latest(scraped), CONTENT_TYPE_LATEST

    return exposition


def oldest_heartbeat() -> float | None:
    """The oldest event-loop heartbeat among live processes (Unix time), from the exposition registry.

    With several workers, ``livemin`` aggregation makes this the heartbeat of the most stalled one.
    """
    for family in exposition_registry().collect():
        if family.name == HEARTBEAT_METRIC:
            values = [sample.value for sample in family.samples]
            return min(values) if values else None
    return None
