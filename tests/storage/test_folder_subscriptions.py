"""Folders mda creates are subscribed in Dovecot's ``<Maildir>/subscriptions`` file, as Dovecot's
``lda_mailbox_autosubscribe`` does, so that clients listing subscribed folders (IMAP ``LSUB``) show them."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.peers.dovecot import DovecotSetup, DovecotUser
from tests.sieve_delivery.test_sieve_delivery import ALICE, deliver, maildir, message, write_script

SCRIPT = """require ["fileinto", "mailbox"];
if header :is "subject" "lists" { fileinto :create "Lists.python"; }
if header :is "subject" "accent" { fileinto :create "Café"; }
if header :is "subject" "existing" { fileinto "Kept"; }
"""


def lsub(setup: DovecotSetup, home: Path) -> set[str]:
    dovecot = setup.start([DovecotUser.maildir(ALICE, home)])
    imap = dovecot.imap(ALICE)
    try:
        status, listed = imap.lsub()
        assert status == "OK", listed
        names = {line.decode().rsplit(" ", 1)[1].strip('"') for line in listed if line}
        subscribed = imap.subscribe("Kept")  # Dovecot's own write, kept by mda's later ones
        assert subscribed[0] == "OK", subscribed
    finally:
        imap.logout()
        dovecot.stop()
    return names


@pytest.mark.root
def test_created_folders_are_subscribed_as_dovecot_reads_them(
    dovecot_factory: DovecotSetup, start_mda: Callable[..., RunningServer]
) -> None:
    setup = dovecot_factory
    root = setup.mail_root
    write_script(root, SCRIPT)
    config = basic_config(root, sieve={"path": "{home}/active.sieve"})
    config["storage"].update(owner="vmail", create_folders=True)
    server = start_mda(config)
    kept = maildir(root) / ".Kept"
    kept.mkdir(parents=True)  # a folder that exists is not subscribed by mda
    for directory in (maildir(root).parent.parent, maildir(root).parent, maildir(root), kept):
        os.chown(directory, *setup.owner)
    for number, subject in enumerate(("lists", "accent", "lists", "existing"), start=1):
        assert [r.code for r in deliver(server, [ALICE], message(subject, number=number))] == [250]
    # create_folders: alice+news@ makes and subscribes .news
    assert [r.code for r in deliver(server, ["alice+news@example.test"], message("hello", number=9))] == [250]

    subscriptions = maildir(root) / "subscriptions"
    assert subscriptions.read_bytes() == b"V\t2\n\nLists\tpython\nCaf&AOk-\nnews\n"
    info = subscriptions.stat()
    assert (info.st_uid, info.st_gid) == setup.owner and stat.S_IMODE(info.st_mode) == 0o600
    assert not (maildir(root) / "subscriptions.lock").exists()
    assert lsub(setup, maildir(root).parent) == {"Lists.python", "Caf&AOk-", "news"}

    # After Dovecot rewrote the file (SUBSCRIBE Kept), a new folder of mda's keeps every entry.
    write_script(root, 'require ["fileinto", "mailbox"];\nfileinto :create "Later";\n')
    assert [r.code for r in deliver(server, [ALICE], message("later", number=10))] == [250]
    assert lsub(setup, maildir(root).parent) == {"Lists.python", "Caf&AOk-", "news", "Kept", "Later"}


def test_old_format_file_gets_an_old_format_line(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """A file without the version line (written by Dovecot before 2.3) keeps its format: ``.`` levels."""
    root = tmp_path / "mail"
    write_script(root, SCRIPT)
    server = start_mda(basic_config(root, sieve={"path": "{home}/active.sieve"}))
    maildir(root).mkdir(parents=True)
    (maildir(root) / "subscriptions").write_bytes(b"Archive\nArchive.2025")
    assert [r.code for r in deliver(server, [ALICE], message("lists"))] == [250]
    assert (maildir(root) / "subscriptions").read_bytes() == b"Archive\nArchive.2025\nLists.python\n"


@pytest.mark.parametrize("hostile", ["fifo", "symlink", "directory"])
def test_hostile_subscriptions_file_never_costs_the_message(
    tmp_path: Path, start_mda: Callable[..., RunningServer], hostile: str
) -> None:
    """A FIFO (which would hang a reader), a symlink (which would lead the write elsewhere) or a
    directory where the file belongs: the folder is created and the message stored, the file untouched."""
    root = tmp_path / "mail"
    write_script(root, SCRIPT)
    server = start_mda(basic_config(root, sieve={"path": "{home}/active.sieve"}))
    maildir(root).mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched\n")
    path = maildir(root) / "subscriptions"
    if hostile == "fifo":
        os.mkfifo(path)
    elif hostile == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    assert [r.code for r in deliver(server, [ALICE], message("lists"))] == [250]
    assert len(list((maildir(root) / ".Lists.python" / "new").iterdir())) == 1
    assert target.read_bytes() == b"untouched\n"
    assert path.is_symlink() or not path.is_file()
    assert not (maildir(root) / "subscriptions.lock").exists()


def test_a_held_lock_delays_but_never_refuses(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """Another writer's fresh lock: mda waits a moment, then stores without subscribing."""
    root = tmp_path / "mail"
    write_script(root, SCRIPT)
    server = start_mda(basic_config(root, sieve={"path": "{home}/active.sieve"}))
    maildir(root).mkdir(parents=True)
    (maildir(root) / "subscriptions.lock").write_bytes(b"")
    assert [r.code for r in deliver(server, [ALICE], message("lists"))] == [250]
    assert len(list((maildir(root) / ".Lists.python" / "new").iterdir())) == 1
    assert not (maildir(root) / "subscriptions").exists()
    assert (maildir(root) / "subscriptions.lock").exists()  # another writer's lock is left to it
