"""The configuration contract and the commands' exit codes (docs/configuration.md; README's command table)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mda.config import usable_cores
from mda.units import parse_duration, parse_size
from tests.clients import Client, transaction
from tests.mdaproc import start_server
from tests.peers import programs


def run_mda(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mda", *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_check_config_accepts_the_issue_example(tmp_path):
    config = tmp_path / "mda.yaml"
    config.write_text(
        "hostname: mx.example.test\n"
        "listeners:\n"
        "  - protocol: lmtp\n"
        "    bind: 127.0.0.1:2424\n"
        "  - protocol: smtp\n"
        f"    bind: unix:{tmp_path}/smtp.sock\n"
        '    socket_mode: "0660"\n'
        "domains: [example.test]\n"
        "storage:\n"
        "  format: maildir\n"
        "  path: /var/mail/{domain}/{user}/Maildir\n"
        "  fsync: true\n"
        "limits: {max_message_size: 25M, max_recipients: 100, command_timeout: 5m, data_timeout: 10m}\n"
        "users:\n"
        "  alice@example.test: {}\n"
        "  bob@example.test: {}\n"
    )
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nstorgae: {}\n", 3, "storgae"),
        (
            "listeners:\n  - protocol: lmtp\n    bind: '127.0.0.1:0'\n    colour: red\ndomains: [a.test]\n",
            4,
            "listeners[0].colour",
        ),
        ("listeners: [{protocol: pop3, bind: '127.0.0.1:0'}]\ndomains: [a.test]\n", 1, "listeners[0].protocol"),
        ("listeners: [{protocol: lmtp, bind: 'nowhere'}]\ndomains: [a.test]\n", 1, "listeners[0].bind"),
        (
            "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\n"
            "limits:\n  max_message_size: huge\n",
            4,
            "limits.max_message_size",
        ),
        (
            "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nstorage: {path: '/m/{usr}'}\n",
            3,
            "storage.path",
        ),
        (
            "listeners: [{protocol: smtp, bind: '127.0.0.1:0', limits: {hard_error_limit: -1}}]\ndomains: [a.test]\n",
            1,
            "listeners[0].limits.hard_error_limit",
        ),
        (
            "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nlimits: {max_header_size: 100}\n",
            3,
            "limits.max_header_size",
        ),
        ("listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nmax_hops: 1\nmax_hops: 2\n", 4, ""),
        ("listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nworkers: all\n", 3, "workers"),
        ("listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nworkers: 0\n", 3, "workers"),
        ("listeners: [\n", 2, ""),
    ],
)
def test_check_config_names_file_line_and_key(tmp_path, text, line, key):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:{line}: {key}"), result.stderr


def test_user_outside_our_domains_is_named_in_the_file_that_lists_it(tmp_path):
    """The error names the user's own file and line, however the address is spelled, and a users file
    next to an empty ``users:`` key is checked too."""
    head = "listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nusers_file: users.yaml\n"
    config = tmp_path / "mda.yaml"
    users = tmp_path / "users.yaml"
    users.write_text("x@a.test: {}\n")
    config.write_text(head + "users:\n  Bob@Other.test: {}\n")
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:5: users.Bob@Other.test: domain other.test"), result.stderr

    users.write_text("x@a.test: {}\nY@B.test: {}\n")
    config.write_text(head + "users:\n")
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{users}:2: Y@B.test: domain b.test"), result.stderr


def test_check_config_refuses_non_utf8_and_nul(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"hostname: \xff\n")
    assert run_mda("check-config", "--config", str(config)).returncode == 1
    config.write_bytes(b"hostname: a\x00b\n")
    assert run_mda("check-config", "--config", str(config)).returncode == 1


def test_bad_usage_exits_2_and_bad_config_exits_1_for_serve(tmp_path):
    assert run_mda("serve", "--no-such-flag").returncode == 2
    missing = run_mda("serve", "--config", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 1
    assert "missing.yaml" in missing.stderr


def test_print_shows_the_embedded_default():
    result = run_mda("check-config", "--print")
    assert result.returncode == 0
    assert "bind: 127.0.0.1:2424" in result.stdout and "./mail/{domain}/{user}/Maildir" in result.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_default_configuration_serves_localhost_into_working_directory(tmp_path):
    if not all(_port_free(port) for port in (2424, 2525, 9464)):
        pytest.fail("the default ports 2424, 2525 and 9464 must be free for this test")
    server = start_server("", tmp_path, args=())
    try:
        assert server.lines[:2] == ["listening lmtp 127.0.0.1:2424", "listening smtp 127.0.0.1:2525"]
        assert "delivering to ./mail/{domain}/{user}/Maildir (maildir, fsync)" in server.lines
        with Client(("127.0.0.1", 2424)) as client:
            client.cmd("LHLO client.test")
            _, data = transaction(client, "s@remote.test", ["anyone@localhost"], b"Subject: x\r\n\r\nhi\r\n")
            assert data[0].code == 250
    finally:
        server.stop()
    assert len(list((tmp_path / "mail" / "localhost" / "anyone" / "Maildir" / "new").iterdir())) == 1


@pytest.mark.parametrize(("text", "value"), [("25M", 25 * 1024**2), ("1G", 1024**3), (4096, 4096), ("10k", 10240)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("30s", 30.0), ("5m", 300.0), ("1d", 86400.0), (0, 0.0), ("2h", 7200.0)])
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["", "-1", "1X", "lots", True, "1.5.5M"])
def test_bad_units_are_refused(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_deliver_with_a_broken_command_line_defers_instead_of_bouncing():
    assert run_mda("deliver").returncode == 75
    assert run_mda("deliver", "--no-such-flag", "a@example.test").returncode == 75


@pytest.mark.root
def test_readme_tour_configuration_is_valid(tmp_path):
    """The annotated configuration in README's tour must pass check-config as written, on a machine that
    has the mail user it names (``vmail``: check-config refuses an unknown user)."""
    programs.ensure_system_user("vmail")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tour = readme.split("## A short tour", 1)[1]
    block = tour.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "users.yaml").write_text("carol@example.test: {}\n")
    config = tmp_path / "mda.yaml"
    config.write_text(block)
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("cpu_max", "limit"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("junk\n", None)]
)
def test_workers_auto_stays_within_the_cgroup_cpu_quota(tmp_path, cpu_max, limit):
    """``workers: auto`` counts the cores of the affinity mask, capped by a container's CPU quota."""
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert usable_cores(path) == (cores if limit is None else min(cores, limit))
    assert usable_cores(tmp_path / "missing") == cores
