"""``passwd: true`` domains: system users receive mail in ``~/Maildir``, owned by them (like Postfix
local(8)); uid 0 is never a recipient; path tricks in the local part never reach a home directory."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import Client
from tests.policy.helpers import MESSAGE, SENDER, maildir_messages


@pytest.fixture
def system_user(tmp_path: Path) -> Iterator[pwd.struct_passwd]:
    """A throw-away system user whose home is under the test's temporary folder."""
    name = "mdat" + uuid.uuid4().hex[:8]
    home = tmp_path / "home" / name
    home.parent.mkdir(parents=True)
    home.parent.chmod(0o755)
    subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.mark.root
def test_system_users_get_mail_in_their_home(start_mda, tmp_path, system_user):
    config = {
        "hostname": "mx.example.test",
        "listeners": [{"protocol": "lmtp", "bind": "127.0.0.1:0"}, {"protocol": "smtp", "bind": "127.0.0.1:0"}],
        "domains": {"example.test": {"passwd": True}},
        "storage": {"path": f"{tmp_path}/virtual/{{domain}}/{{user}}/Maildir"},
    }
    server = start_mda(config)
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
    for path in (copy, maildir, maildir / "new"):
        status = os.stat(path)
        assert (status.st_uid, status.st_gid) == (system_user.pw_uid, system_user.pw_gid), path
    assert not (tmp_path / "virtual").exists()
