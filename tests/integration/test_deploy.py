"""contrib/ and deploy/ are checked by the tools that consume them, so a broken file fails CI.

promtool reads the Prometheus rules and scrape config; every metric the Grafana dashboard queries must
appear in the /metrics of a running mda after one delivery; doveconf parses the Dovecot settings;
systemd-analyze verifies the unit; kubernetes-validate checks the manifests against the API schema;
the Containerfile is parsed for the essentials (non-root, mail volume, health check on /healthz); and
every mda configuration shipped in deploy/ passes ``mda check-config``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clients import Client, transaction
from tests.conftest import RunningServer, basic_config
from tests.peers.dovecot import ensure_packages

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"
DEPLOY = REPO / "deploy"
METRIC_NAME = re.compile(r"\bmda_[a-z0-9_]+")
SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.MULTILINE)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def need_tool(tool: str, package: str) -> None:
    """Install ``package`` when ``tool`` is missing (CI may start from a bare Debian)."""
    if shutil.which(tool) is None:
        ensure_packages(package)


# --- Prometheus and Grafana ----------------------------------------------------------------------


@pytest.mark.root
def test_promtool_accepts_rules_and_scrape_config() -> None:
    need_tool("promtool", "prometheus")
    rules = run("promtool", "check", "rules", str(CONTRIB / "prometheus/mda-alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run("promtool", "check", "config", str(CONTRIB / "prometheus/prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_alerts_cover_the_operational_failures() -> None:
    groups = yaml.safe_load((CONTRIB / "prometheus/mda-alerts.yml").read_text())["groups"]
    rules = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    assert 'result="permfail"' in rules["MdaDeliveryFailureRatioHigh"]
    assert 'result="tempfail"' in rules["MdaTempfailSpike"]
    assert 'result="failure"' in rules["MdaConfigReloadFailed"]
    assert "mda_storage_free_bytes" in rules["MdaMailStorageNearlyFull"]
    assert 'reason="disk_full"' in rules["MdaRefusingForDiskSpace"]
    assert 'result="delivered"' in rules["MdaNoDeliveries"]


def exposed_names(exposition: str) -> set[str]:
    """Every sample name in a Prometheus text exposition, plus the family names of its TYPE lines."""
    names = set(SAMPLE_NAME.findall(exposition))
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            family, kind = line.split()[2:4]
            names.add(family)
            if kind == "counter":
                names.add(family + "_total")
            if kind == "histogram":
                names.update(family + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((CONTRIB / "grafana/mda-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def rule_metrics() -> set[str]:
    text = (CONTRIB / "prometheus/mda-alerts.yml").read_text()
    return set(METRIC_NAME.findall(text))


def test_dashboard_and_rules_use_only_metrics_mda_exports(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    server = start_mda(basic_config(tmp_path / "mail", metrics={"bind": "127.0.0.1:0"}))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.example.test")
        _, data = transaction(client, "s@outside.test", ["alice@example.test"], b"Subject: one\r\n\r\nbody\r\n")
        assert [reply.code for reply in data] == [250]
    [url] = [line.split()[1] for line in server.lines if line.startswith("metrics ")]
    with urllib.request.urlopen(url, timeout=10) as response:
        exposition = response.read().decode()
    exported = exposed_names(exposition)
    wanted = dashboard_metrics()
    assert len(wanted) >= 8
    assert wanted - exported == set()
    assert rule_metrics() - exported == set()


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads((CONTRIB / "grafana/mda-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus"
        assert panel["targets"], panel["title"]


# --- Dovecot --------------------------------------------------------------------------------------


@pytest.mark.root
def test_doveconf_parses_the_dovecot_settings(tmp_path: Path) -> None:
    need_tool("doveconf", "dovecot-core")
    config = tmp_path / "dovecot.conf"
    config.write_text(f"ssl = no\n!include {CONTRIB / 'dovecot/99-mda.conf'}\n")
    result = run("doveconf", "-n", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "mail_location = maildir:/var/mail/%d/%n/Maildir" in result.stdout
    assert "quota = maildir:User quota" in result.stdout
    assert "separator = ." in result.stdout


# --- systemd --------------------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened() -> None:
    unit = unit_settings(DEPLOY / "systemd/mda.service")
    assert unit["Type"] == ["notify"]
    assert unit["ProtectSystem"] == ["strict"]
    assert "/var/mail" in unit["ReadWritePaths"][0].split()
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["User"] == ["vmail"]
    assert "serve --config" in unit["ExecStart"][0]


@pytest.mark.root
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    need_tool("systemd-analyze", "systemd")
    # verify also checks that ExecStart's program exists; mda is not installed at /usr/local/bin here.
    unit = tmp_path / "mda.service"
    unit.write_text((DEPLOY / "systemd/mda.service").read_text().replace("/usr/local/bin/mda", "/bin/true"))
    result = run("systemd-analyze", "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert "mda.service" not in result.stderr, result.stderr


# --- container ------------------------------------------------------------------------------------


def containerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            instructions = []
        instructions.append((word.upper(), rest.strip()))
    return instructions


def test_containerfile_runs_non_root_with_mail_volume_and_healthcheck() -> None:
    instructions = containerfile_instructions(DEPLOY / "container/Containerfile")
    by_name: dict[str, list[str]] = {}
    for name, args in instructions:
        by_name.setdefault(name, []).append(args)
    [user] = by_name["USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert [name for name, _ in instructions].index("USER") > max(
        index for index, (name, _) in enumerate(instructions) if name == "RUN"
    )
    assert any("/var/mail" in volume for volume in by_name["VOLUME"])
    [health] = by_name["HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health
    assert json.loads(by_name["ENTRYPOINT"][0]) == ["mda"]
    assert "serve" in json.loads(by_name["CMD"][0])


def check_config(tmp_path: Path, text: str, users: str) -> subprocess.CompletedProcess[str]:
    """``mda check-config`` on a shipped configuration, its users file moved next to it."""
    (tmp_path / "users.yaml").write_text(users)
    config = tmp_path / "mda.yaml"
    config.write_text(text.replace("/etc/mda/users.yaml", str(tmp_path / "users.yaml")))
    return run(sys.executable, "-m", "mda", "check-config", "--config", str(config), cwd=REPO)


def test_shipped_configurations_are_valid(tmp_path: Path) -> None:
    container = check_config(
        tmp_path,
        (DEPLOY / "container/mda.yaml").read_text(),
        (DEPLOY / "container/users.yaml").read_text(),
    )
    assert container.returncode == 0, container.stdout + container.stderr
    configmap = yaml.safe_load((DEPLOY / "kubernetes/configmap.yaml").read_text())
    kube = check_config(tmp_path, configmap["data"]["mda.yaml"], configmap["data"]["users.yaml"])
    assert kube.returncode == 0, kube.stdout + kube.stderr


# --- Kubernetes -----------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def test_kubernetes_manifests_validate_against_the_api_schema() -> None:
    import kubernetes_validate  # from pyproject's test extra

    for doc in manifests():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubernetes_deployment_essentials() -> None:
    by_kind = {doc["kind"]: doc for doc in manifests()}
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"} <= set(by_kind)
    pod = by_kind["Deployment"]["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9464"
    [container] = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    # A subPath mount never sees ConfigMap updates: the whole directory is mounted for hot reload.
    assert "subPath" not in mounts["config"] and mounts["config"]["mountPath"] == "/etc/mda"
    assert mounts["mail"]["mountPath"] == "/var/mail"
    assert by_kind["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    ports = {port["name"] for port in by_kind["Service"]["spec"]["ports"]}
    assert {"lmtp", "smtp"} <= ports
