"""The alert rules of contrib/prometheus: unit-tested with ``promtool test rules``, and every series they
read exists on a freshly started mda (an absent series keeps an alert silent forever)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import basic_config
from tests.ops.helpers import fetch, metrics_url, scrape, value
from tests.peers import programs

RULES_DIR = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
RULES = RULES_DIR / "mda-alerts.yml"
RULE_TESTS = RULES_DIR / "mda-alerts.test.yml"
SELECTOR = re.compile(r"\b(mda_[a-z_]+)(?:\{([^}]*)\})?")


@pytest.fixture(scope="module")
def promtool() -> str:
    """The ``promtool`` program (Debian package ``prometheus``), installed when missing."""
    return programs.require(programs.PROMTOOL)


def alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for name in alerts():
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it stays silent"


@pytest.mark.root
def test_promtool_checks_the_rules(promtool: str) -> None:
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.root
def test_promtool_unit_tests_pass(promtool: str) -> None:
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULES_DIR, capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A directory on another file system (tmpfs) than the test's temporary folder."""
    assert os.path.isdir("/dev/shm"), "this test needs /dev/shm, the tmpfs every Linux system mounts"
    directory = Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_every_series_the_rules_read_exists_after_a_fresh_start(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    samples = scrape(server)
    names = {name for name, _ in samples}
    for alert, expr in alerts().items():
        for name, matchers in SELECTOR.findall(expr):
            assert name in names, f"{alert}: {name} is not exposed before the first event"
            wanted = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
            assert any(n == name and wanted.items() <= dict(labels).items() for n, labels in samples), (
                f"{alert}: no {name} series with {wanted} before the first event"
            )
    assert value(samples, "mda_deliveries_total", result="delivered") == 0


def test_storage_gauges_match_statvfs_of_each_mail_root(start_mda, tmp_path: Path, shm_dir: Path) -> None:
    mail = tmp_path / "mail"
    mail.mkdir()
    domains = {"example.test": {}, "shm.example": {"path": f"{shm_dir}/{{domain}}/{{user}}"}}
    server = start_mda(basic_config(mail, domains=domains, metrics={"bind": "127.0.0.1:0"}))
    samples = scrape(server)
    roots = {dict(labels)["root"] for name, labels in samples if name == "mda_storage_size_bytes"}
    assert roots == {str(mail), str(shm_dir)}
    for root in roots:
        stat = os.statvfs(root)
        size = stat.f_blocks * stat.f_frsize
        assert value(samples, "mda_storage_size_bytes", root=root) == size
        free = value(samples, "mda_storage_free_bytes", root=root)
        assert 0 < free <= size
        # Other programs write meanwhile: the figure is the same within 1% of the file system.
        assert abs(free - stat.f_bavail * stat.f_frsize) <= size / 100
        assert value(samples, "mda_storage_inodes", root=root) == stat.f_files
        free_inodes = value(samples, "mda_storage_free_inodes", root=root)
        assert 0 < free_inodes <= stat.f_files
        assert abs(free_inodes - stat.f_favail) <= stat.f_files / 100
    assert abs(value(samples, "mda_start_time_seconds") - time.time()) < 600
    _, text = fetch(metrics_url(server))
    assert text.count("# TYPE mda_storage_free_bytes gauge") == 1


def test_a_root_not_created_yet_is_measured_on_its_parent(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "not-yet", metrics={"bind": "127.0.0.1:0"}))
    samples = scrape(server)
    stat = os.statvfs(tmp_path)
    root = str(tmp_path / "not-yet")
    assert value(samples, "mda_storage_size_bytes", root=root) == stat.f_blocks * stat.f_frsize
