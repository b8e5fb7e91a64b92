"""Postfix reaches mda's UNIX sockets through group membership, the one method README documents.

mda's sockets get ``socket_mode: "0660"`` and a group that Postfix's user is a member of; nothing is
world-writable. Postfix's smtpd (policy) and lmtp client both run as ``postfix`` and must get through.
The group here is a throw-away one, removed at the end.
"""

from __future__ import annotations

import grp
import smtplib
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import RunningServer
from tests.integration.test_postfix_e2e import DEFAULT_SOCKET, SENDER, PostfixDir, mda_config, message, snippet
from tests.peers.dovecot import ensure_system_user
from tests.peers.postfix import queue_is_empty, start_postfix

pytestmark = pytest.mark.root

DEFAULT_POLICY = "inet:127.0.0.1:10031"


@pytest.fixture
def postfix_group() -> Iterator[str]:
    """A new group with the ``postfix`` user in it (``usermod -aG GROUP postfix``, as README says)."""
    name = "mdag" + uuid.uuid4().hex[:8]
    subprocess.run(["groupadd", name], check=True)
    try:
        subprocess.run(["usermod", "-aG", name, "postfix"], check=True)
        yield name
    finally:
        subprocess.run(["gpasswd", "-d", "postfix", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False)


def test_postfix_reaches_0660_sockets_through_its_group(
    postfix_factory: PostfixDir, start_mda: Callable[..., RunningServer], postfix_group: str
) -> None:
    directory, started = postfix_factory
    ensure_system_user()
    mail_root = directory / "mail"
    mail_root.mkdir(mode=0o755)
    subprocess.run(["chown", "vmail:vmail", str(mail_root)], check=True)
    run = directory / "run"
    run.mkdir()
    run.chmod(0o750)
    subprocess.run(["chown", f"vmail:{postfix_group}", str(run)], check=True)
    lmtp_socket, policy_socket = run / "lmtp.sock", run / "policy.sock"
    group = {"socket_mode": "0660", "socket_owner": f"vmail:{postfix_group}"}
    listeners = [
        {"protocol": "lmtp", "bind": f"unix:{lmtp_socket}", **group},
        {"protocol": "policy", "bind": f"unix:{policy_socket}", **group},
    ]
    start_mda(mda_config(mail_root, listeners, user="vmail"))
    for path in (lmtp_socket, policy_socket):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and grp.getgrgid(info.st_gid).gr_name == postfix_group
    settings = {
        **snippet("main.cf.lmtp-unix", {DEFAULT_SOCKET: str(lmtp_socket)}),
        **snippet("main.cf.policy", {DEFAULT_POLICY: f"unix:{policy_socket}"}),
    }
    postfix = start_postfix(directory, settings)
    started.append(postfix)

    wire = message("group")
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        code, text = client.rcpt("nobody@example.test")
        assert code in (550, 554) and text.startswith(b"5.1.1 "), (code, text)
        assert client.rcpt("bob@example.test")[0] == 250
        assert client.data(wire)[0] == 250
    postfix.wait_for_status("bob@example.test", "sent")
    stored = list((mail_root / "example.test/bob/Maildir/new").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes().endswith(wire.replace(b"\r\n", b"\n"))
    assert "Permission denied" not in postfix.log()
    assert queue_is_empty(postfix)
