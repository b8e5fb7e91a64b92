"""check-config and the configuration file: keys that collide once folded, configurations without
listeners (for ``mda deliver``), ``--print`` output that is itself a valid configuration, and the default
host name."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.certificates import self_signed
from tests.clients import Client
from tests.conftest import basic_config
from tests.ops.helpers import deliver

MESSAGE = b"From: a@example.net\nTo: alice@example.test\nSubject: lda\n\nhello\n"


def run_mda(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mda", *args], capture_output=True, input=stdin, cwd=cwd, timeout=60, check=False
    )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def write(path: Path, config: dict[str, Any] | str) -> Path:
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    return path


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# --- keys that collide after folding the local part ---------------------------------------------------


@pytest.mark.parametrize(
    ("section", "first", "second"),
    [
        ("users", "alice@example.test: {}", "Alice@Example.test: {quota: 1M}"),
        ("aliases", "team@example.test: bob@example.test", "TEAM@example.test: carol@example.test"),
    ],
)
def test_keys_differing_only_in_case_are_an_error_naming_both_lines(
    tmp_path: Path, section: str, first: str, second: str
) -> None:
    config = tmp_path / "mda.yaml"
    text = (
        "listeners: [{protocol: lmtp, bind: 127.0.0.1:0}]\n"
        "domains: [example.test]\n"
        f"storage: {{path: '{tmp_path}/mail/{{domain}}/{{user}}'}}\n"
        "users:\n  bob@example.test: {}\n  carol@example.test: {}\n"
    )
    text += f"  {first}\n  {second}\n" if section == "users" else f"aliases:\n  {first}\n  {second}\n"
    write(config, text)
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1, result.stdout
    first_line, second_line = line_of(config, first), line_of(config, second)
    assert result.stderr.startswith(f"{config}:{second_line}: {section}.{second.split(':')[0]}: "), result.stderr
    assert f"{section}.{first.split(':')[0]} at {config}:{first_line}" in result.stderr, result.stderr
    # With case-sensitive local parts they are two addresses.
    write(config, text + "case_sensitive_local_part: true\n")
    assert run_mda("check-config", "--config", str(config)).returncode == 0


def test_a_users_file_key_colliding_with_the_main_file_names_both_files(tmp_path: Path) -> None:
    users = write(tmp_path / "users.yaml", "dave@example.test: {}\nAlice@example.test: {}\n")
    config = write(tmp_path / "mda.yaml", basic_config(tmp_path / "mail", users_file=str(users)))
    result = run_mda("check-config", "--config", str(config))
    assert result.returncode == 1
    assert f"{users}:2:" in result.stderr and f"{config}:{line_of(config, 'alice@example.test')}" in result.stderr


# --- no listeners: fine for deliver, refused by serve ----------------------------------------------


def test_a_configuration_without_listeners_serves_mda_deliver(tmp_path: Path) -> None:
    config_data = basic_config(tmp_path / "mail")
    del config_data["listeners"]
    config = write(tmp_path / "mda.yaml", config_data)
    delivered = run_mda("deliver", "--config", str(config), "-f", "a@example.net", "alice@example.test", stdin=MESSAGE)
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    assert len(list((tmp_path / "mail/example.test/alice/Maildir/new").iterdir())) == 1
    resolved = run_mda("resolve", "--config", str(config), "alice@example.test")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    checked = run_mda("check-config", "--config", str(config))
    assert checked.returncode == 0 and checked.stdout == f"{config}: ok\n"
    assert "no listeners" in checked.stderr and "mda serve" in checked.stderr
    served = run_mda("serve", "--config", str(config))
    assert served.returncode == 1
    assert f"{config}: listeners: mda serve needs at least one listener" in served.stderr


def test_a_reload_to_no_listeners_is_refused(start_mda, tmp_path: Path) -> None:
    server = start_mda(basic_config(tmp_path / "mail"))
    config_data = yaml.safe_load(server.config_path.read_text())
    del config_data["listeners"]
    write(server.config_path, config_data)
    server.signal(signal.SIGHUP)
    assert "reload_failed" in server.wait_for_log("reload_failed")
    assert "needs at least one listener" in server.log()
    assert deliver(server.lmtp, ["alice@example.test"]) == [250]


# --- check-config --print round trip ---------------------------------------------------------------


@pytest.fixture
def readable_tls(public_dir: Path) -> tuple[Path, Path]:
    """A certificate and key that ``user: nobody`` can read (check-config loads them as that user)."""
    cert, key = self_signed(public_dir / "cert.pem", public_dir / "key.pem")
    key.chmod(0o644)
    return cert, key


def full_config(tmp_path: Path, tls: tuple[Path, Path]) -> dict[str, Any]:
    users = write(tmp_path / "users.yaml", "dave@example.test: {quota: 5M}\n")
    config = basic_config(
        tmp_path / "mail",
        listeners=[
            {"protocol": "lmtp", "bind": "127.0.0.1:0", "allow": ["127.0.0.0/8", "::1"]},
            {"protocol": "lmtp", "bind": f"unix:{tmp_path}/lmtp.sock", "socket_mode": "0660"},
            {
                "protocol": "smtp",
                "bind": "[::1]:0",
                "tls": {"cert": str(tls[0]), "key": str(tls[1]), "mode": "implicit"},
                "auth": {"required": True, "users_file": "credentials"},
                "limits": {
                    "max_message_size": "1M",
                    "command_timeout": "90s",
                    "max_header_size": "50K",
                    "hard_error_limit": 5,
                    "junk_command_limit": 0,
                },
            },
        ],
        domains={
            "example.test": {"quota": "1G"},
            "other.test": {"any_user": True, "path": "/srv/other/{user}", "format": "mbox", "owner": "nobody"},
        },
        storage={
            "format": "maildir",
            "path": f"{tmp_path}/mail/{{domain}}/{{user}}/Maildir",
            "fsync": False,
            "owner": "nobody:nogroup",
            "create_folders": True,
            "max_folders": 7,
            "lock_timeout": "1m",
            "quota_messages": 1000,
        },
        users={
            "alice@example.test": {"quota": "10M", "sieve": "{home}/alice.sieve", "owner": "nobody"},
            "bob@example.test": {},
        },
        users_file="users.yaml",
        aliases={
            "postmaster@example.test": "alice@example.test",
            "@other.test": ["alice@example.test", "bob@example.test"],
        },
        recipient_delimiter="+-",
        duplicate_window="1d",
        free_space_reserve="500M",
        limits={"max_recipients": 50, "data_timeout": "2m"},
        metrics={"bind": "127.0.0.1:0"},
        log_format="json",
        workers=2,
        user="nobody",
        state_dir="state",
        submission={"sendmail": ["/usr/sbin/sendmail", "-i"]},
        sieve={"path": "{home}/active.sieve", "before": ["before.sieve"], "after": []},
    )
    assert users.exists()
    return config


@pytest.mark.parametrize("which", ["default", "basic", "full", "submission-host", "passwd", "state"])
def test_print_output_is_a_configuration_that_prints_the_same(
    tmp_path: Path, which: str, readable_tls: tuple[Path, Path]
) -> None:
    configs: dict[str, dict[str, Any] | None] = {
        "default": None,
        "basic": basic_config(tmp_path / "mail"),
        "full": full_config(tmp_path, readable_tls),
        "submission-host": basic_config(tmp_path / "mail", submission={"host": "127.0.0.1", "port": 2526}),
        "passwd": basic_config(
            tmp_path / "mail",
            domains={
                "example.test": {},
                "local.test": {"passwd": True, "first_valid_uid": 2000, "last_valid_uid": 60000},
            },
        ),
        "state": basic_config(
            tmp_path / "mail",
            state={"url": "postgresql://mda@127.0.0.1:5432/mail", "password_file": "pg.pass", "pool_size": 2},
        ),
    }
    data = configs[which]
    args = [] if data is None else ["--config", str(write(tmp_path / "mda.yaml", data))]
    first = run_mda("check-config", "--print", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    printed = tmp_path / "printed" / "mda.yaml"
    printed.parent.mkdir()
    printed.write_text(first.stdout)
    checked = run_mda("check-config", "--config", str(printed), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    second = run_mda("check-config", "--print", "--config", str(printed), cwd=tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout
    document = yaml.safe_load(first.stdout)
    if which == "full":
        assert document["storage"]["owner"] == "nobody:nogroup"
        assert document["state_dir"] == str(tmp_path / "state")
        assert document["sieve"]["before"] == [str(tmp_path / "before.sieve")]
        assert document["users_file"] == str(tmp_path / "users.yaml")
        assert "dave@example.test" not in document["users"]
        assert document["domains"]["other.test"]["owner"] == "nobody"
        smtp_limits = document["listeners"][2]["limits"]
        assert (smtp_limits["max_header_size"], smtp_limits["hard_error_limit"]) == (50 * 1024, 5)
        assert smtp_limits["junk_command_limit"] == 0 and "hard_error_limit" not in document["limits"]
    if which == "state":
        assert document["state"]["password_file"] == str(tmp_path / "pg.pass")
        assert document["state"]["pool_size"] == 2
    if which == "passwd":
        assert document["domains"]["local.test"]["first_valid_uid"] == 2000
        assert document["domains"]["local.test"]["last_valid_uid"] == 60000


# --- default host name --------------------------------------------------------------------------


def test_the_default_hostname_is_what_hostname_f_says(start_mda, tmp_path: Path) -> None:
    program = shutil.which("hostname")
    if program is None:
        pytest.fail("the hostname program (Debian package hostname) is missing")
    expected = subprocess.run([program, "-f"], capture_output=True, text=True, check=True).stdout.strip()
    if expected in ("localhost", "localhost.localdomain"):
        expected = socket.gethostname()
    printed = yaml.safe_load(run_mda("check-config", "--print", cwd=tmp_path).stdout)
    assert printed["hostname"] == expected
    config = basic_config(tmp_path / "mail")
    del config["hostname"]
    server = start_mda(config)
    with Client(server.lmtp) as client:
        assert client.greeting.code == 220 and client.greeting.text.split()[0] == expected
