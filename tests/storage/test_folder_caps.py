"""``create_folders``: the sender names the folder, so the number it can create is capped, per message
(``max_new_folders``) and per mailbox (``max_folders``); beyond the cap the copy goes to INBOX."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from mda.config import load
from mda.yamlsource import ConfigError
from tests.clients import Client, transaction
from tests.conftest import basic_config

MESSAGE = b"From: a@example.net\r\nTo: victim@example.test\r\nSubject: folders\r\n\r\nhello\r\n"


def send(address: tuple[str, int], recipients: list[str], *, lmtp: bool = True) -> list[int]:
    with Client(address) as client:
        client.cmd("LHLO client.example" if lmtp else "EHLO client.example")
        rcpt, data = transaction(client, "sender@example.net", recipients, MESSAGE, lmtp=lmtp)
        client.cmd("QUIT")
    assert [reply.code for reply in rcpt] == [250] * len(recipients)
    return [reply.code for reply in data]


def folders(maildir: Path) -> set[str]:
    return {entry.name for entry in maildir.iterdir() if entry.name.startswith(".") and entry.is_dir()}


def messages(directory: Path) -> int:
    return len(list((directory / "new").iterdir()))


def storage(root: Path, **settings: object) -> dict[str, object]:
    return {"format": "maildir", "path": f"{root}/{{domain}}/{{user}}/Maildir", **settings}


@pytest.mark.parametrize("lmtp", [True, False], ids=["lmtp", "smtp"])
def test_one_message_creates_at_most_max_new_folders(start_mda, tmp_path: Path, lmtp: bool) -> None:
    root = tmp_path / "mail"
    config = basic_config(root, storage=storage(root, create_folders=True, max_new_folders=2))
    server = start_mda(config)
    recipients = [f"alice+junk{n}@example.test" for n in range(10)]
    assert send(server.lmtp if lmtp else server.smtp, recipients, lmtp=lmtp) == ([250] * 10 if lmtp else [250])
    maildir = root / "example.test" / "alice" / "Maildir"
    assert folders(maildir) == {".junk0", ".junk1"}
    assert messages(maildir / ".junk0") == messages(maildir / ".junk1") == 1
    assert messages(maildir) == 8


def test_a_full_mailbox_gets_no_new_folder_but_keeps_using_its_folders(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    config = basic_config(root, storage=storage(root, create_folders=True, max_folders=3))
    server = start_mda(config)
    maildir = root / "example.test" / "alice" / "Maildir"
    assert send(server.lmtp, ["alice+a@example.test", "alice+b@example.test"]) == [250, 250]
    assert send(server.lmtp, ["alice+c@example.test", "alice+d@example.test"]) == [250, 250]
    assert folders(maildir) == {".a", ".b", ".c"}
    assert messages(maildir) == 1
    assert send(server.lmtp, ["alice+a@example.test", "alice+e@example.test"]) == [250, 250]
    assert folders(maildir) == {".a", ".b", ".c"}
    assert messages(maildir / ".a") == 2
    assert messages(maildir) == 2
    # Another mailbox has its own count.
    assert send(server.lmtp, ["bob+a@example.test"]) == [250]
    assert folders(root / "example.test" / "bob" / "Maildir") == {".a"}


def test_a_thousand_recipients_with_the_defaults(start_mda, tmp_path: Path) -> None:
    """The incident: 1000 RCPTs of victim+junkN in one transaction made 1000 folders."""
    root = tmp_path / "mail"
    config = basic_config(root, storage=storage(root, create_folders=True), users={"victim@example.test": {}})
    server = start_mda(config)
    recipients = [f"victim+junk{n}@example.test" for n in range(1000)]
    started = time.monotonic()
    assert send(server.lmtp, recipients) == [250] * 1000
    elapsed = time.monotonic() - started
    maildir = root / "example.test" / "victim" / "Maildir"
    assert len(folders(maildir)) == 5
    assert messages(maildir) == 995
    inodes = sum(len(dirs) + len(files) for _, dirs, files in os.walk(maildir)) + 1
    print(f"1000 RCPTs: {len(folders(maildir))} folders, {inodes} inodes, {elapsed:.2f} s")
    assert inodes < 1000 + 5 * 6 + 10


def test_folders_stay_off_by_default(start_mda, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    server = start_mda(basic_config(root))
    assert send(server.lmtp, ["alice+new@example.test"]) == [250]
    maildir = root / "example.test" / "alice" / "Maildir"
    assert folders(maildir) == set()
    assert messages(maildir) == 1


@pytest.mark.parametrize("key", ["max_folders", "max_new_folders"])
@pytest.mark.parametrize("bad", [-1, "many", True])
def test_caps_are_validated(tmp_path: Path, key: str, bad: object) -> None:
    path = tmp_path / "mda.yaml"
    config = basic_config(tmp_path / "mail", storage=storage(tmp_path / "mail", **{key: bad}))
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=f"storage.{key}"):
        load(path)


def test_sieve_fileinto_create_has_the_same_caps(start_mda, tmp_path: Path) -> None:
    """A script's ``fileinto :create`` (RFC 5490 §3.2) creates folders from the message's own headers, so
    the per-message budget applies to it too; existing folders are used beyond it."""
    root = tmp_path / "mail"
    script = tmp_path / "folders.sieve"
    script.write_text(
        'require ["fileinto", "mailbox"];\n'
        'fileinto :create "one";\nfileinto :create "two";\nfileinto :create "three";\n'
    )
    config = basic_config(root, storage=storage(root, max_new_folders=2))
    config["users"]["alice@example.test"] = {"sieve": str(script)}
    server = start_mda(config)
    assert send(server.lmtp, ["alice@example.test"]) == [250]
    maildir = root / "example.test" / "alice" / "Maildir"
    assert folders(maildir) == {".one", ".two"}
    assert messages(maildir) == 1
    (maildir / ".three" / "new").mkdir(parents=True)
    assert send(server.lmtp, ["alice@example.test"]) == [250]
    assert messages(maildir / ".three") == 1 and messages(maildir) == 1
