"""contrib/ and deploy/ are checked by the tools that consume them, so a broken file fails CI.

promtool reads the Prometheus rules and scrape config; every metric the Grafana dashboard queries must
appear in the /metrics of a running mda after one delivery; doveconf parses the Dovecot settings;
systemd-analyze verifies the unit against a real virtual environment built as deploy/systemd/README.md
says, whose mda runs as the mail user; kubernetes-validate checks the manifests against the API schema;
the Containerfile is parsed for the essentials (non-root, mail volume, health check on /healthz); and
every mda configuration shipped in deploy/ passes ``mda check-config``.

A program a test runs is looked for itself (never in dpkg's database, which also lists packages it
merely knows of); when it is missing the package that provides it is installed, and when it is still
missing the test fails naming it.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.clients import Client, transaction
from tests.conftest import RunningServer, basic_config
from tests.peers import programs
from tests.peers.dovecot import MAIL_USER, ensure_system_user

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib"
DEPLOY = REPO / "deploy"
METRIC_NAME = re.compile(r"\bmda_[a-z0-9_]+")
SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.MULTILINE)
SYSTEM_PYTHON = Path("/usr/bin/python3")
"""The interpreter deploy/systemd/README.md builds the venv from (readable by the mail user)."""
INSTALL_PREFIX = Path("/opt/mda")
"""Where deploy/systemd/mda.service expects the venv."""
MAIL_ROOT = "/var/vmail"
"""The shipped mail root: a root of its own, not Debian's system spool /var/mail."""


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def need_tool(tool: str, package: str) -> str:
    """The path of the program ``tool``; ``package`` is installed when it is missing (tests/peers/programs.py)."""
    return programs.require(programs.Program(tool, package))


def need_module(module: str, distribution: str) -> ModuleType:
    """Import ``module``, pip-installing ``distribution`` (from pyproject's test extra) when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    result = run(sys.executable, "-m", "pip", "install", "--quiet", distribution, timeout=600)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(
            f"the Python module {module} is missing, and pip install {distribution} did not provide it:\n"
            + result.stdout
            + result.stderr
        )


# --- Prometheus and Grafana ----------------------------------------------------------------------


@pytest.mark.root
def test_promtool_accepts_rules_and_scrape_config() -> None:
    promtool = need_tool("promtool", "prometheus")
    rules = run(promtool, "check", "rules", str(CONTRIB / "prometheus/mda-alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run(promtool, "check", "config", str(CONTRIB / "prometheus/prometheus.yml"))
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
    doveconf = need_tool("doveconf", "dovecot-core")
    config = tmp_path / "dovecot.conf"
    config.write_text(f"ssl = no\n!include {CONTRIB / 'dovecot/99-mda.conf'}\n")
    result = run(doveconf, "-n", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert f"mail_location = maildir:{MAIL_ROOT}/%d/%n/Maildir" in result.stdout
    assert "quota = maildir:User quota" in result.stdout
    assert "separator = ." in result.stdout


# --- the mail root ---------------------------------------------------------------------------------

SYSTEM_SPOOL = re.compile(r"/var/mail(?![\w.-])")


def shipped_text_files() -> list[Path]:
    files = [REPO / "README.md"]
    for top in (CONTRIB, DEPLOY):
        files += [path for path in sorted(top.rglob("*")) if path.is_file() and path.suffix not in (".py", ".json")]
    return files


def test_no_shipped_file_puts_mail_in_the_system_spool() -> None:
    """Debian's /var/mail (root:mail 2775) is the system spool: named only to say it is left alone."""
    misuses = []
    for path in shipped_text_files():
        text = " ".join(path.read_text().split())
        for match in SYSTEM_SPOOL.finditer(text):
            context = text[max(0, match.start() - 60) : match.end() + 60]
            if "spool" not in context:
                misuses.append(f"{path.relative_to(REPO)}: ...{context}...")
    assert misuses == []


# --- systemd --------------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def unit_text() -> str:
    return (DEPLOY / "systemd/mda.service").read_text()


def unit() -> dict[str, list[str]]:
    return unit_settings(unit_text())


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def test_systemd_unit_is_hardened() -> None:
    settings = unit()
    assert settings["Type"] == ["notify"]
    assert settings["ProtectSystem"] == ["strict"]
    assert MAIL_ROOT in settings["ReadWritePaths"][0].split()
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["User"] == ["vmail"]
    assert "serve --config" in settings["ExecStart"][0]


def test_systemd_unit_runs_mda_from_the_venv_it_documents() -> None:
    """Not /usr/local/bin (pip refuses the system python on Debian), nor where ProtectHome/PrivateTmp hide."""
    settings = unit()
    programs = {line.split()[0] for line in settings["ExecStartPre"] + settings["ExecStart"]}
    assert programs == {f"{INSTALL_PREFIX}/bin/mda"}
    assert settings["ProtectHome"] == ["yes"] and settings["PrivateTmp"] == ["yes"]
    assert not INSTALL_PREFIX.is_relative_to("/home") and not INSTALL_PREFIX.is_relative_to("/root")
    assert not INSTALL_PREFIX.is_relative_to("/tmp") and not INSTALL_PREFIX.is_relative_to("/var/tmp")
    guide = (DEPLOY / "systemd/README.md").read_text()
    assert f"python3 -m venv {INSTALL_PREFIX} && {INSTALL_PREFIX}/bin/pip install /path/to/mda" in guide


def test_systemd_unit_matches_the_example_configuration() -> None:
    """state_dir is the unit's StateDirectory, the mail root is writable, the socket in RuntimeDirectory."""
    settings = unit()
    config = load_yaml("systemd/mda.yaml")
    assert settings["StateDirectory"] == ["mda"]
    assert config["state_dir"] == "/var/lib/mda"
    root = config["storage"]["path"].split("{", 1)[0].rstrip("/")
    assert root == MAIL_ROOT
    assert root in settings["ReadWritePaths"][0].split()
    [runtime] = settings["RuntimeDirectory"]
    sockets = [listener["bind"] for listener in config["listeners"] if listener["bind"].startswith("unix:")]
    assert sockets and all(bind.startswith(f"unix:/run/{runtime}/") for bind in sockets)


def test_systemd_unit_documentation_exists_once_installed() -> None:
    """Every Documentation= URI has a scheme systemd accepts; a file: URI names what the guide installs."""
    settings = unit()
    guide = (DEPLOY / "systemd/README.md").read_text()
    uris = [uri for line in settings["Documentation"] for uri in line.split()]
    assert uris
    for uri in uris:
        scheme = uri.split(":", 1)[0]
        assert scheme in ("http", "https", "file", "info", "man"), uri
        if scheme == "file":
            installed = uri.removeprefix("file://")
            match = re.search(rf"install -D -m 0644 /path/to/mda/(\S+) {re.escape(installed)}\b", guide)
            assert match, f"deploy/systemd/README.md does not install {installed}"
            assert (REPO / match.group(1)).is_file()


def test_systemd_example_configuration_is_valid(tmp_path: Path) -> None:
    result = check_config(
        tmp_path,
        (DEPLOY / "systemd/mda.yaml").read_text(),
        (DEPLOY / "systemd/users.yaml").read_text(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def venv_prefix() -> Iterator[Path]:
    """An empty directory for mda's venv: /opt/mda itself when it does not exist (the unit is then
    verified unchanged), else a private one beside it (an operator's installation is never touched)."""
    try:
        INSTALL_PREFIX.mkdir()
        prefix = INSTALL_PREFIX
    except FileExistsError:
        prefix = Path(tempfile.mkdtemp(prefix="mda-test-", dir=INSTALL_PREFIX.parent))
    prefix.chmod(0o755)
    try:
        yield prefix
    finally:
        shutil.rmtree(prefix)


def build_venv(prefix: Path, tmp_path: Path) -> None:
    """deploy/systemd/README.md's install: a venv from the system python3, then pip install of mda
    (from a copy of the source, so the checkout gets no build/ or egg-info)."""
    programs.require(programs.SYSTEM_PYTHON)
    programs.require_that(
        f"{SYSTEM_PYTHON} -m venv (its ensurepip)",
        "python3-venv",
        lambda: run(str(SYSTEM_PYTHON), "-c", "import ensurepip, venv").returncode == 0,
    )
    source = tmp_path / "mda-src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "mda", source / "mda", ignore=shutil.ignore_patterns("__pycache__"))
    created = run(str(SYSTEM_PYTHON), "-m", "venv", str(prefix), timeout=300)
    assert created.returncode == 0, created.stdout + created.stderr
    installed = run(str(prefix / "bin/pip"), "install", "--quiet", str(source), timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr


def as_mail_user(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command as the service's user, with a bare environment (no PYTHONPATH into the checkout)."""
    runuser = need_tool("runuser", "util-linux")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        [runuser, "-u", MAIL_USER, "--", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.root
def test_systemd_analyze_verifies_the_unit_against_a_real_venv(venv_prefix: Path, tmp_path: Path) -> None:
    systemd_analyze = need_tool("systemd-analyze", "systemd")
    ensure_system_user(MAIL_USER)
    build_venv(venv_prefix, tmp_path)
    unit = tmp_path / "mda.service"
    unit.write_text(unit_text().replace(f"{INSTALL_PREFIX}/", f"{venv_prefix}/"))
    # verify also checks that every Exec program exists and is executable.
    result = run(systemd_analyze, "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert "mda.service" not in result.stderr, result.stderr

    [exec_start] = unit_settings(unit.read_text())["ExecStart"]
    program = exec_start.split()[0]
    assert Path(program).is_file()
    interpreter = (venv_prefix / "bin/python3").resolve()
    assert interpreter == SYSTEM_PYTHON.resolve()
    helped = as_mail_user(program, "--help")
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "serve" in helped.stdout and "check-config" in helped.stdout

    # ExecStartPre, as the mail user, on the example configuration (its users file beside it).
    etc = venv_prefix / "etc-test"
    etc.mkdir()
    (etc / "users.yaml").write_text((DEPLOY / "systemd/users.yaml").read_text())
    (etc / "mda.yaml").write_text(
        (DEPLOY / "systemd/mda.yaml").read_text().replace("/etc/mda/users.yaml", str(etc / "users.yaml"))
    )
    checked = as_mail_user(program, "check-config", "--config", str(etc / "mda.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


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
    [volumes] = by_name["VOLUME"]
    # The mail root and state_dir outlive the container.
    assert set(json.loads(volumes)) == {MAIL_ROOT, load_yaml("container/mda.yaml")["state_dir"]}
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


def configmap_files() -> dict[str, str]:
    """The files of the ConfigMap: mda.yaml and users.yaml."""
    data: dict[str, str] = load_yaml("kubernetes/configmap.yaml")["data"]
    return data


def shipped_config(name: str) -> dict[str, Any]:
    text = configmap_files()["mda.yaml"] if name == "kubernetes" else (DEPLOY / "container/mda.yaml").read_text()
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def test_shipped_configurations_are_valid(tmp_path: Path) -> None:
    container = check_config(
        tmp_path,
        (DEPLOY / "container/mda.yaml").read_text(),
        (DEPLOY / "container/users.yaml").read_text(),
    )
    assert container.returncode == 0, container.stdout + container.stderr
    files = configmap_files()
    kube = check_config(tmp_path, files["mda.yaml"], files["users.yaml"])
    assert kube.returncode == 0, kube.stdout + kube.stderr


@pytest.mark.parametrize("name", ["container", "kubernetes"])
def test_listeners_on_every_address_have_an_allow_list(name: str) -> None:
    """0.0.0.0 with no allow: would take mail from anyone who can reach the port."""
    config = shipped_config(name)
    for listener in config["listeners"]:
        networks = [ipaddress.ip_network(network) for network in listener.get("allow", [])]
        assert networks, listener
        assert all(network.prefixlen > 0 and not network.is_global for network in networks), listener


@pytest.mark.parametrize("name", ["container", "kubernetes"])
def test_state_dir_is_off_the_mail_root(name: str) -> None:
    config = shipped_config(name)
    root = Path(config["storage"]["path"].split("{", 1)[0])
    assert root == Path(MAIL_ROOT)
    assert not Path(config["state_dir"]).is_relative_to(root)


def test_kubernetes_allow_list_refuses_other_clients_on_the_wire(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """The ConfigMap's configuration, on loopback ports: loopback is no pod address, so 554 5.7.1."""
    config = shipped_config("kubernetes")
    config["listeners"] = [{**listener, "bind": "127.0.0.1:0"} for listener in config["listeners"]]
    config["metrics"] = {"bind": "127.0.0.1:0"}
    config["storage"] = {**config["storage"], "path": f"{tmp_path}/mail/{{domain}}/{{user}}/Maildir"}
    config["state_dir"] = str(tmp_path / "state")
    (tmp_path / "users.yaml").write_text(configmap_files()["users.yaml"])
    config["users_file"] = str(tmp_path / "users.yaml")
    server = start_mda(config)
    for address in (server.lmtp, server.smtp):
        with Client(address) as client:
            assert (client.greeting.code, client.greeting.enhanced) == (554, "5.7.1"), client.greeting


# --- Kubernetes -----------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in manifests()}


def test_kubernetes_manifests_validate_against_the_api_schema() -> None:
    kubernetes_validate = need_module("kubernetes_validate", "kubernetes-validate>=1.28")
    docs = manifests()
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy", "Namespace"} <= {
        doc["kind"] for doc in docs
    }
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubernetes_deployment_essentials() -> None:
    kinds = by_kind()
    pod = kinds["Deployment"]["spec"]["template"]
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
    assert mounts["mail"]["mountPath"] == MAIL_ROOT
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    ports = {port["name"] for port in kinds["Service"]["spec"]["ports"]}
    assert {"lmtp", "smtp"} <= ports


def test_kubernetes_uid_is_the_image_s_mail_user() -> None:
    """The files mda writes are private to its uid: pod, image (and Dovecot's mail_uid) must agree."""
    security = by_kind()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    containerfile = (DEPLOY / "container/Containerfile").read_text()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", containerfile)
    gid = re.search(r"groupadd [^\n]*--gid (\d+)", containerfile)
    assert uid and gid
    assert security["runAsUser"] == int(uid.group(1))
    assert security["runAsGroup"] == security["fsGroup"] == int(gid.group(1))


def test_kubernetes_state_dir_is_per_pod_not_on_the_shared_volume() -> None:
    """SQLite files shared by replicas over NFS are unsafe: state_dir is on a volume of the pod's own."""
    pod = by_kind()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    state = Path(shipped_config("kubernetes")["state_dir"])
    holding = [mount for mount in container["volumeMounts"] if state.is_relative_to(mount["mountPath"])]
    mount = max(holding, key=lambda mount: len(mount["mountPath"]))
    assert "emptyDir" in volumes[mount["name"]], mount
    mail = next(volume for volume in volumes.values() if "persistentVolumeClaim" in volume)
    assert mount["name"] != mail["name"]


def test_kubernetes_network_policy_admits_only_the_mx_and_prometheus() -> None:
    kinds = by_kind()
    policy = kinds["NetworkPolicy"]["spec"]
    pod = kinds["Deployment"]["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "Ingress" in policy["policyTypes"]
    [container] = pod["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    admitted: dict[str, set[str]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without from admits every source"
        assert rule.get("ports"), "a rule without ports admits every port"
        for source in rule["from"]:
            assert "ipBlock" not in source, source
            name = source["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            admitted.setdefault(name, set()).update(str(port["port"]) for port in rule["ports"])
    assert admitted == {"postfix": {"lmtp", "smtp"}, "prometheus": {"metrics"}}
    assert set().union(*admitted.values()) <= set(container_ports)


def test_kustomization_sets_the_namespace_the_manifests_name() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    assert by_kind()["Namespace"]["metadata"]["name"] == namespace
    service = (DEPLOY / "kubernetes/service.yaml").read_text()
    assert set(re.findall(r"\bmda\.([a-z0-9-]+)\.svc\.cluster\.local", service)) == {namespace}
    listed = set(kustomization["resources"])
    present = {path.name for path in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
