"""``mda resolve`` and ``mda check-config`` on recipient rules, run as real commands.

Exit codes are README's contract (the command table): resolve 0 deliverable, 1 refused, 2 bad usage or configuration;
check-config 0 valid, 1 invalid with ``FILE:LINE: KEY: problem``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import basic_config


def mda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mda", *args], capture_output=True, text=True, timeout=60)


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    config = basic_config(
        tmp_path / "mail",
        users={"alice@example.test": {"quota": "10K"}, "bob@example.test": {}},
        aliases={"team@example.test": ["alice@example.test", "bob@example.test"]},
    )
    return write(tmp_path / "mda.yaml", config)


def test_resolve_explains_every_step(config_file, tmp_path):
    result = mda("resolve", "--config", str(config_file), "Team+News@Example.Test", "--size", "100")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "address: Team+News@Example.Test"
    text = result.stdout
    for expected in (
        "normalised: local part 'Team+News'",
        "domain example.test: ours",
        "subaddress: user team, detail 'news'",
        "alias team@example.test -> alice@example.test, bob@example.test",
        "user alice@example.test",
        f"mailbox maildir {tmp_path}/mail/example.test/alice/Maildir",
        "free space at ",
        "(10240 bytes, 0 messages): room for the message",
    ):
        assert expected in text, text
    assert lines[-1] == "reply: 250 2.1.5 Recipient OK"


@pytest.mark.parametrize(
    ("address", "size", "code", "reply"),
    [
        ("alice@example.test", "20000", 1, "reply: 552 5.2.2 Mailbox full"),
        ("nobody@example.test", None, 1, "reply: 550 5.1.1 No such user here"),
        ("x@elsewhere.test", None, 1, "reply: 550 5.7.1 Relay access denied"),
        ("../x@example.test", None, 1, "reply: 501 5.1.3 Bad address syntax"),
        ("bob@example.test", None, 0, "reply: 250 2.1.5 Recipient OK"),
    ],
)
def test_resolve_exit_codes(config_file, address, size, code, reply):
    result = mda("resolve", "--config", str(config_file), address, *(["--size", size] if size else []))
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == reply


def test_resolve_bad_usage_and_bad_config_exit_2(config_file, tmp_path):
    assert mda("resolve", "--config", str(config_file)).returncode == 2
    assert mda("resolve", "--config", str(config_file), "a@example.test", "--size", "-1").returncode == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("listeners: []\n")
    assert mda("resolve", "--config", str(broken), "a@example.test").returncode == 2


CONFIG_ERRORS = [
    (
        {
            "aliases": {
                "a@example.test": "b@example.test",
                "B@example.test": ["c@example.test"],
                "c@example.test": "A@example.test",
            }
        },
        ":11: aliases.a@example.test: alias cycle: "
        "a@example.test -> b@example.test -> c@example.test -> a@example.test",
    ),
    (
        {"aliases": {"x@example.test": "someone@elsewhere.test"}},
        ":11: aliases.x@example.test: target someone@elsewhere.test is not in a domain listed under domains",
    ),
    (
        {"aliases": {"x@elsewhere.test": "alice@example.test"}},
        ":11: aliases.x@elsewhere.test: alias x@elsewhere.test is not in a domain listed under domains",
    ),
    ({"aliases": {"x@example.test": "not an address"}}, ":11: aliases.x@example.test: "),
]


@pytest.mark.parametrize(("extra", "message"), CONFIG_ERRORS)
def test_check_config_names_file_and_line(tmp_path, extra, message):
    config = {
        "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}],
        "domains": ["example.test"],
        "storage": {"path": f"{tmp_path}/{{domain}}/{{user}}"},
        "users": {"alice@example.test": {}},
        **extra,
    }
    path = write(tmp_path / "mda.yaml", config)
    result = mda("check-config", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(str(path) + message), result.stderr


def test_users_file_entry_outside_our_domains_names_the_users_file(tmp_path):
    (tmp_path / "users.yaml").write_text("alice@example.test: {}\nzed@elsewhere.test: {}\n")
    config = basic_config(tmp_path / "mail", users_file="users.yaml", users={})
    result = mda("check-config", "--config", str(write(tmp_path / "mda.yaml", config)))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{tmp_path}/users.yaml:2: zed@elsewhere.test: "), result.stderr


def test_check_config_against_lists_changed_and_unknown_addresses(tmp_path):
    old = basic_config(tmp_path / "mail", aliases={"team@example.test": "alice@example.test"})
    new = basic_config(
        tmp_path / "mail",
        users={"alice@example.test": {}, "carol@example.test": {"format": "mbox", "path": f"{tmp_path}/mbox/carol"}},
        aliases={"team@example.test": "carol@example.test", "new@example.test": "alice@example.test"},
    )
    old_path, new_path = write(tmp_path / "old.yaml", old), write(tmp_path / "new.yaml", new)
    result = mda("check-config", "--config", str(new_path), "--against", str(old_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{new_path}: ok"
    assert f"unknown bob@example.test: was maildir:{tmp_path}/mail/example.test/bob/Maildir, now 550 5.1.1" in lines
    assert (
        f"changed carol@example.test: maildir:{tmp_path}/mail/example.test/carol/Maildir -> mbox:{tmp_path}/mbox/carol"
        in lines
    )
    assert (
        f"changed team@example.test: maildir:{tmp_path}/mail/example.test/alice/Maildir"
        f" -> mbox:{tmp_path}/mbox/carol" in lines
    )
    assert f"changed new@example.test: 550 5.1.1 -> maildir:{tmp_path}/mail/example.test/alice/Maildir" in lines
    same = mda("check-config", "--config", str(new_path), "--against", str(new_path))
    assert same.stdout.splitlines()[1] == "no known address changes destination"


def test_resolve_names_the_user_and_the_source_that_could_not_answer(tmp_path):
    """A source that cannot answer: the reply is 451 4.3.0 (exit 1, as refused for now), the step names
    the source, and standard error carries a full log line (recipient, driver, source, reason), never a
    bare event name. A source that cannot even be opened is a bad configuration (exit 2), named."""
    missing = tmp_path / "users.passwd"
    config = basic_config(tmp_path / "mail", users={}, userdb=[{"driver": "passwd-file", "path": str(missing)}])
    result = mda("resolve", "--config", str(write(tmp_path / "mda.yaml", config)), "carl@example.test")
    assert result.returncode == 1, result
    assert f"  userdb: could not answer: passwd-file {missing}: cannot read {missing}" in result.stdout
    assert result.stdout.endswith("reply: 451 4.3.0 Temporary lookup failure, try again later\n")
    [line] = result.stderr.splitlines()
    assert line.startswith("level=warning event=userdb_error driver=passwd-file "), line
    assert f'source="passwd-file {missing}" recipient=carl@example.test reason=' in line, line

    password = tmp_path / "no-such-password"
    sql = {"driver": "sql", "url": f"sqlite:///{tmp_path}/users.db", "password_file": str(password)}
    sql["user_query"] = "SELECT 1 FROM users WHERE address = :address"
    config = basic_config(tmp_path / "mail", users={}, userdb=[sql])
    result = mda("resolve", "--config", str(write(tmp_path / "sql.yaml", config)), "carl@example.test")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    message = f"userdb sql sqlite:///{tmp_path}/users.db: password_file {password}: No such file"
    assert result.stderr.startswith(f"mda resolve: {message}"), result.stderr
    checked = mda("check-config", "--config", str(tmp_path / "sql.yaml"), "--connect")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked
    assert message in checked.stdout, checked
