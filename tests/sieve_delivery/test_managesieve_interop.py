"""ManageSieve interop: a script uploaded and activated with a real ManageSieve client (``sieve-connect``)
against Dovecot's ``managesieved`` is the script mda runs, through Dovecot's ``~/.dovecot.sieve`` link."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.peers import programs
from tests.peers.dovecot import PASSWORD, Dovecot, DovecotSetup, DovecotUser
from tests.sieve_delivery.test_sieve_delivery import ALICE, BOB, deliver, maildir, message, stored

FILTER = """require ["fileinto", "mailbox"];
if header :contains "subject" "lists" { fileinto :create "Lists"; }
"""


def sieve_connect(dovecot: Dovecot, user: str, *args: str) -> str:
    """Run ``sieve-connect`` without a terminal: the password comes on a pipe (``--passwordfd``), and
    plain authentication is allowed on the loopback connection without TLS (``--clearchan``)."""
    read, write = os.pipe()
    os.write(write, PASSWORD.encode() + b"\n")
    os.close(write)
    try:
        result = subprocess.run(
            [
                programs.require(programs.SIEVE_CONNECT),
                "--server",
                "127.0.0.1",
                "--port",
                str(dovecot.sieve_port),
                "--user",
                user,
                "--passwordfd",
                str(read),
                "--clearchan",
                "--authmech",
                "PLAIN",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(read,),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        os.close(read)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{dovecot.log()}"
    return result.stdout


@pytest.mark.root
def test_script_activated_over_managesieve_runs_at_delivery(
    tmp_path: Path, dovecot_factory: DovecotSetup, start_mda: Callable[..., RunningServer]
) -> None:
    setup = dovecot_factory
    root = setup.mail_root
    home = maildir(root).parent
    home.mkdir(parents=True)
    os.chown(home.parent, *setup.owner)
    os.chown(home, *setup.owner)
    dovecot = setup.start([DovecotUser.maildir(ALICE, home)], managesieve=True)

    local = tmp_path / "filters.sieve"
    local.write_text(FILTER)
    sieve_connect(dovecot, ALICE, "--localsieve", str(local), "--remotesieve", "filters", "--upload")
    sieve_connect(dovecot, ALICE, "--remotesieve", "filters", "--activate")
    assert "filters" in sieve_connect(dovecot, ALICE, "--list")
    link = home / ".dovecot.sieve"
    assert link.is_symlink() and (home / os.readlink(link)).resolve() == (home / "sieve" / "filters.sieve")

    config = basic_config(root, sieve={"path": "{home}/.dovecot.sieve"})
    config["storage"]["owner"] = "vmail"
    server = start_mda(config)
    assert [r.code for r in deliver(server, [ALICE, BOB], message("lists", to=f"{ALICE}, {BOB}"))] == [250, 250]
    assert len(stored(maildir(root) / ".Lists")) == 1 and stored(maildir(root)) == []
    assert len(stored(maildir(root, "bob"))) == 1  # no script of bob's

    # Deactivating removes the link: the next message is delivered as without Sieve.
    sieve_connect(dovecot, ALICE, "--deactivate")
    assert not os.path.lexists(link)
    assert [r.code for r in deliver(server, [ALICE], message("lists", number=2))] == [250]
    assert len(stored(maildir(root))) == 1


@pytest.mark.root
def test_active_link_leading_out_of_the_home_is_refused(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """A virtual user's active script is followed only while it stays inside the home (the directory
    above the Maildir): a link to another user's script, or anywhere else, delivers to INBOX and logs."""
    root = tmp_path / "mail"
    home, other = maildir(root).parent, maildir(root, "bob").parent
    (other / "sieve").mkdir(parents=True)
    (other / "sieve" / "bob.sieve").write_text('require ["fileinto", "mailbox"];\nfileinto :create "Stolen";\n')
    home.mkdir(parents=True)
    (home / ".dovecot.sieve").symlink_to(other / "sieve" / "bob.sieve")
    server = start_mda(basic_config(root, sieve={"path": "{home}/.dovecot.sieve"}))
    assert [r.code for r in deliver(server, [ALICE], message("hello"))] == [250]
    assert len(stored(maildir(root))) == 1 and not (maildir(root) / ".Stolen").exists()
    assert "leads out of the home" in server.wait_for_log("script refused")
