"""``passwd: true`` domains: system users receive mail in ``~/Maildir``, owned by them (like Postfix
local(8)); uid 0 and system accounts are never recipients; homes are never created; path tricks in the
local part never reach a home directory, and files a user plants in their home are never trusted by
the root process (README, "Local users")."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clients import Client, Reply
from tests.policy.helpers import MESSAGE, SENDER, maildir_messages
from tests.policy.system_users import as_user_file


def passwd_config(tmp_path: Path, *, sieve: str | None = None, **domains: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hostname": "mx.example.test",
        "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "smtp", "bind": "127.0.0.1:0"}],
        "domains": domains or {"example.test": {"passwd": True}},
        "storage": {"path": f"{tmp_path}/virtual/{{domain}}/{{user}}/Maildir"},
    }
    if sieve is not None:
        config["sieve"] = {"path": sieve}
    return config


def deliver(server, recipient: str, *, timeout: float = 10.0) -> tuple[Reply, list[Reply]]:
    """One LMTP transaction to ``recipient``: (RCPT reply, DATA replies)."""
    with Client(server.lmtp, timeout=timeout) as client:
        client.cmd("LHLO client.test")
        assert client.cmd(f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}").code == 250
        rcpt = client.cmd(f"RCPT TO:<{recipient}>")
        if rcpt.code != 250:
            return rcpt, []
        return rcpt, client.data(MESSAGE)


def owner(path: Path) -> tuple[int, int]:
    status = os.lstat(path)
    return status.st_uid, status.st_gid


@pytest.mark.root
def test_system_users_get_mail_in_their_home(start_mda, tmp_path, make_user):
    system_user = make_user()
    server = start_mda(passwd_config(tmp_path))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        replies = [
            client.cmd(f"RCPT TO:<{address}>")
            for address in (
                f"{system_user.pw_name}@example.test",
                f"{system_user.pw_name.upper()}@example.test",
                "root@example.test",
                "no-such-user-here@example.test",
                "../root@example.test",
            )
        ]
        codes = [(r.code, r.enhanced) for r in replies]
        assert codes == [(250, "2.1.5"), (250, "2.1.5"), (550, "5.1.1"), (550, "5.1.1"), (501, "5.1.3")]
        data = client.data(MESSAGE, replies=2)
        assert [d.code for d in data] == [250, 250]
    maildir = Path(system_user.pw_dir) / "Maildir"
    [copy] = maildir_messages(maildir)
    for path in (copy, maildir, maildir / "new", maildir / "tmp", maildir / "cur"):
        assert owner(path) == (system_user.pw_uid, system_user.pw_gid), path
    assert not (tmp_path / "virtual").exists()


# --- item: system accounts and homes --------------------------------------------------------------


@pytest.mark.root
def test_system_accounts_are_unknown_and_get_no_directory(start_mda, tmp_path):
    """uid below ``first_valid_uid`` (1000): ``550 5.1.1``, as for a user that does not exist."""
    names = ("daemon", "bin", "sys", "www-data", "_apt", "mail")
    accounts = [e for e in pwd.getpwall() if e.pw_name in names]
    assert any(e.pw_name == "daemon" for e in accounts) and all(0 < e.pw_uid < 1000 for e in accounts)
    homes_before = {e.pw_name: Path(e.pw_dir).exists() for e in accounts}
    server = start_mda(passwd_config(tmp_path))
    with Client(server.lmtp) as client:
        client.cmd("LHLO client.test")
        client.cmd(f"MAIL FROM:<{SENDER}>")
        for entry in accounts:
            reply = client.cmd(f"RCPT TO:<{entry.pw_name}@example.test>")
            assert (reply.code, reply.enhanced) == (550, "5.1.1"), (entry.pw_name, reply)
    for entry in accounts:
        assert Path(entry.pw_dir).exists() == homes_before[entry.pw_name], entry.pw_dir
        assert not (Path(entry.pw_dir) / "Maildir").exists(), entry.pw_dir


@pytest.mark.root
def test_uid_bounds_are_configurable(start_mda, tmp_path, make_user):
    user = make_user()
    server = start_mda(
        passwd_config(
            tmp_path,
            **{
                "below.test": {"passwd": True, "first_valid_uid": user.pw_uid + 1},
                "above.test": {"passwd": True, "first_valid_uid": 500, "last_valid_uid": user.pw_uid - 1},
                "inside.test": {"passwd": True, "first_valid_uid": user.pw_uid, "last_valid_uid": user.pw_uid},
            },
        )
    )
    for domain, expected in (("below.test", (550, "5.1.1")), ("above.test", (550, "5.1.1"))):
        rcpt, _ = deliver(server, f"{user.pw_name}@{domain}")
        assert (rcpt.code, rcpt.enhanced) == expected, domain
    rcpt, data = deliver(server, f"{user.pw_name}@inside.test")
    assert rcpt.code == 250 and [d.code for d in data] == [250]


def test_uid_bounds_need_a_passwd_domain(tmp_path):
    config = tmp_path / "mda.yaml"
    for domain, message in (
        ({"example.test": {"first_valid_uid": 500}}, "first_valid_uid needs passwd: true"),
        ({"example.test": {"passwd": True, "first_valid_uid": 2000, "last_valid_uid": 1000}}, "below"),
        ({"example.test": {"passwd": True, "first_valid_uid": -1}}, "between"),
    ):
        config.write_text(yaml.safe_dump(passwd_config(tmp_path, **domain)))
        result = subprocess.run(
            [sys.executable, "-m", "mda", "check-config", "--config", str(config)], capture_output=True, text=True
        )
        assert result.returncode == 1 and message in result.stderr + result.stdout, result


@pytest.mark.root
def test_a_missing_home_is_never_created(start_mda, tmp_path, make_user):
    """No home: ``451 4.3.0`` at RCPT (it may be an unmounted file system), and nothing is created."""
    user = make_user(create_home=False)
    foreign = make_user(create_home=False)
    Path(foreign.pw_dir).mkdir(mode=0o755)  # exists, but belongs to root
    server = start_mda(passwd_config(tmp_path))
    for entry in (user, foreign):
        rcpt, _ = deliver(server, f"{entry.pw_name}@example.test")
        assert (rcpt.code, rcpt.enhanced) == (451, "4.3.0"), rcpt
    assert not Path(user.pw_dir).exists()
    assert list(Path(foreign.pw_dir).iterdir()) == []
    nobody = pwd.getpwnam("nobody")  # uid 65534 is inside the default bounds; its home does not exist
    if not Path(nobody.pw_dir).exists():
        rcpt, _ = deliver(server, "nobody@example.test")
        assert (rcpt.code, rcpt.enhanced) == (451, "4.3.0"), rcpt
        assert not Path(nobody.pw_dir).exists()


# --- item: files in a user's home -----------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _first_message(server, user: pwd.struct_passwd, domain: str = "example.test") -> Path:
    rcpt, data = deliver(server, f"{user.pw_name}@{domain}")
    assert rcpt.code == 250 and [d.code for d in data] == [250], (rcpt, data)
    return Path(user.pw_dir) / "Maildir"


@pytest.mark.root
def test_fifo_as_maildirsize_stalls_no_client(start_mda, tmp_path, make_user):
    """The RCPT-time quota check opens ``maildirsize`` with O_NONBLOCK and wants a regular file: a FIFO
    is treated like a corrupt file (rebuilt, as Dovecot rebuilds one it cannot parse)."""
    user = make_user()
    server = start_mda(passwd_config(tmp_path, **{"example.test": {"passwd": True, "quota": "1M"}}))
    maildir = _first_message(server, user)
    (maildir / "maildirsize").unlink()
    os.mkfifo(maildir / "maildirsize", 0o600)
    as_user_file(maildir / "maildirsize", user)
    with Client(server.lmtp, timeout=5) as first:
        first.cmd("LHLO client.test")
        assert first.cmd(f"MAIL FROM:<{SENDER}> SIZE=100").code == 250
        started = time.monotonic()
        rcpt = first.cmd(f"RCPT TO:<{user.pw_name}@example.test>")
        elapsed = time.monotonic() - started
        assert rcpt.code == 250, rcpt
        assert elapsed < 2, elapsed
        with Client(server.lmtp, timeout=5) as second:  # another client is served meanwhile
            assert second.cmd("LHLO other.test").code == 250
            assert second.cmd("NOOP").code == 250
        assert [r.code for r in first.data(MESSAGE)] == [250]
    assert len(maildir_messages(maildir)) == 2
    rebuilt = os.lstat(maildir / "maildirsize")
    assert rebuilt.st_mode & 0o170000 == 0o100000
    assert (rebuilt.st_uid, rebuilt.st_nlink) == (user.pw_uid, 1)


@pytest.mark.root
def test_hard_link_to_a_root_file_as_maildirsize_is_never_written(start_mda, tmp_path, homes, make_user):
    """What a user can do with ``fs.protected_hardlinks=0`` (made here by root on the same file system)."""
    user = make_user()
    secret = homes / "root-only"
    secret.write_bytes(b"root only\n")
    secret.chmod(0o600)
    server = start_mda(
        passwd_config(tmp_path, **{"example.test": {"passwd": True}, "quota.test": {"passwd": True, "quota": "1M"}})
    )
    maildir = _first_message(server, user)
    os.link(secret, maildir / "maildirsize")
    _first_message(server, user)  # no quota: only the usage delta would be appended
    assert secret.read_bytes() == b"root only\n"
    _first_message(server, user, "quota.test")  # quota: read, found foreign, rebuilt beside it
    assert secret.read_bytes() == b"root only\n"
    assert (os.stat(secret).st_nlink, owner(secret)) == (1, (0, 0))
    assert owner(maildir / "maildirsize") == (user.pw_uid, user.pw_gid)
    assert len(maildir_messages(maildir)) == 3


@pytest.mark.root
def test_dev_zero_as_sieve_script_is_refused_without_growing(start_mda, tmp_path, make_user):
    user = make_user()
    script = Path(user.pw_dir) / "active.sieve"
    script.symlink_to("/dev/zero")
    as_user_file(script, user)
    config = passwd_config(tmp_path, sieve="{home}/active.sieve")
    config["workers"] = 1  # one process: the one whose memory is measured
    server = start_mda(config)
    before = _rss_kib(server.process.pid, "VmRSS")
    maildir = _first_message(server, user)
    grown = _rss_kib(server.process.pid, "VmHWM") - before
    assert grown < 20 * 1024, f"peak RSS grew by {grown} KiB"
    assert [p.parent.name for p in maildir_messages(maildir)] == ["new"]
    log = server.wait_for_log("script refused")
    assert "leads out of the home directory" in log


@pytest.mark.root
def test_fifo_as_sieve_script_is_refused_promptly(start_mda, tmp_path, make_user):
    user = make_user()
    os.mkfifo(Path(user.pw_dir) / "active.sieve", 0o600)
    as_user_file(Path(user.pw_dir) / "active.sieve", user)
    server = start_mda(passwd_config(tmp_path, sieve="{home}/active.sieve"))
    started = time.monotonic()
    for _ in range(3):  # more deliveries than one storage thread: none of them is held
        maildir = _first_message(server, user)
    assert time.monotonic() - started < 5
    assert len(maildir_messages(maildir)) == 3
    assert "not a regular file" in server.wait_for_log("not a regular file")


@pytest.mark.root
@pytest.mark.parametrize("absolute", [False, True], ids=["relative link", "absolute link"])
def test_sieve_link_inside_the_home_is_followed(start_mda, tmp_path, make_user, absolute):
    """Dovecot's layout: ``~/.dovecot.sieve`` -> ``sieve/a.sieve``; what the script creates is the user's.
    The kernel's one-call resolution beneath the home refuses every absolute link, so
    ``/home/USER/sieve/a.sieve`` is resolved by the walk, which follows it."""
    user = make_user()
    home = Path(user.pw_dir)
    (home / "sieve").mkdir()
    (home / "sieve" / "a.sieve").write_text('require ["fileinto", "mailbox"];\nfileinto :create "Work";\n')
    (home / ".dovecot.sieve").symlink_to(home / "sieve" / "a.sieve" if absolute else Path("sieve/a.sieve"))
    for path in (home / "sieve", home / "sieve" / "a.sieve", home / ".dovecot.sieve"):
        as_user_file(path, user)
    server = start_mda(passwd_config(tmp_path, sieve="{home}/.dovecot.sieve"))
    maildir = _first_message(server, user)
    [stored] = maildir_messages(maildir)
    assert stored.parent.parent.name == ".Work"
    ids = (user.pw_uid, user.pw_gid)
    for path in (stored, stored.parent, maildir / ".Work", maildir / ".Work" / "maildirfolder", maildir / "new"):
        assert owner(path) == ids, path


@pytest.mark.root
def test_a_directory_as_sieve_script_is_no_script(start_mda, tmp_path, make_user):
    """A directory where the user's script would be is no script, not a refused one: the
    ``sieve.after`` script still runs (a refused script would disable the whole sequence)."""
    user = make_user()
    (Path(user.pw_dir) / "active.sieve").mkdir()
    as_user_file(Path(user.pw_dir) / "active.sieve", user)
    after = tmp_path / "after.sieve"
    after.write_text('require ["fileinto", "mailbox"];\nfileinto :create "After";\n')
    config = passwd_config(tmp_path, sieve="{home}/active.sieve")
    config["sieve"]["after"] = [str(after)]
    server = start_mda(config)
    maildir = _first_message(server, user)
    [stored] = maildir_messages(maildir)
    assert stored.parent.parent.name == ".After"


@pytest.mark.root
@pytest.mark.parametrize("relative", [False, True], ids=["absolute link", "relative link climbing out"])
def test_sieve_link_out_of_the_home_is_refused(start_mda, tmp_path, homes, make_user, relative):
    user = make_user()
    outside = homes / "outside.sieve"
    outside.write_text("discard;\n")
    as_user_file(outside, user)
    link = Path(user.pw_dir) / ".dovecot.sieve"
    link.symlink_to(Path("..") / outside.name if relative else outside)
    as_user_file(link, user)
    server = start_mda(passwd_config(tmp_path, sieve="{home}/.dovecot.sieve"))
    maildir = _first_message(server, user)
    assert [p.parent.name for p in maildir_messages(maildir)] == ["new"]  # kept, not discarded
    assert "leads out of the home directory" in server.wait_for_log("leads out of the home directory")


@pytest.mark.root
def test_a_script_owned_by_someone_else_is_refused(start_mda, tmp_path, make_user):
    user = make_user()
    (Path(user.pw_dir) / "active.sieve").write_text("discard;\n")  # root's file in the user's home
    server = start_mda(passwd_config(tmp_path, sieve="{home}/active.sieve"))
    maildir = _first_message(server, user)
    assert len(maildir_messages(maildir)) == 1
    assert f"not {user.pw_uid}" in server.wait_for_log(f"not {user.pw_uid}")


@pytest.mark.root
def test_an_unreadable_script_fails_only_its_owner(start_mda, tmp_path, make_user):
    """A user's script they made unreadable (mode 000) is refused for them; the transaction's other
    recipient is delivered as usual (it must not become a 451 for everyone)."""
    user, other = make_user(), make_user()
    script = Path(user.pw_dir) / "active.sieve"
    script.write_text("discard;\n")
    as_user_file(script, user)
    script.chmod(0)
    server = start_mda(passwd_config(tmp_path, sieve="{home}/active.sieve"))
    with Client(server.lmtp, timeout=10) as client:
        client.cmd("LHLO client.test")
        assert client.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        for entry in (user, other):
            assert client.cmd(f"RCPT TO:<{entry.pw_name}@example.test>").code == 250
        assert [r.code for r in client.data(MESSAGE, replies=2)] == [250, 250]
    for entry in (user, other):
        assert len(maildir_messages(Path(entry.pw_dir) / "Maildir")) == 1
    assert "Permission denied" in server.wait_for_log("script refused: Permission denied")
