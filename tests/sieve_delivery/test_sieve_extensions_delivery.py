"""Sieve extensions through a real ``mda serve`` and the real command line: the settings under ``sieve:``
(spamtest, virustest) and ``environment`` at delivery, ``mda sieve-check`` naming what mda refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import basic_config
from tests.mdaproc import RunningServer
from tests.sieve_delivery.conftest import Sink
from tests.sieve_delivery.test_sieve_delivery import (
    ALICE,
    DELIVERED,
    _mda,
    deliver,
    maildir,
    serve,
    stored,
    write_script,
)

SPAM_RULES = """require ["spamtest", "virustest", "relational", "comparator-i;ascii-numeric", "fileinto",
  "mailbox", "environment", "variables"];
if virustest :value "ge" :comparator "i;ascii-numeric" "4" { fileinto :create "Quarantine"; stop; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto :create "Junk"; stop; }
if environment :matches "host" "*" { fileinto :create "Via.${1}"; }
"""

SETTINGS = {
    "spamtest": {"status_header": "X-Spam-Status: score=(-?[0-9.]+)", "max_value": 10},
    "virustest": {
        "status_header": "X-Virus-Scan",
        "status_type": "text",
        "text_values": ["", "clean", "", "", "suspicious", "infected"],
    },
}


def spam_message(status: str, virus: str = "clean", number: int = 1) -> bytes:
    return (
        f"From: <sender@example.org>\nTo: <{ALICE}>\nSubject: offer {number}\n"
        f"Message-ID: <s{number}@example.org>\nX-Spam-Status: {status}\nX-Virus-Scan: {virus}\n\nBuy.\n"
    ).encode()


def test_spamtest_and_virustest_read_the_configured_fields(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """A SpamAssassin score of 7.1 out of 10 is spamtest 7 (Junk); ``infected`` is virustest 5
    (Quarantine); a clean, low-scoring message reaches the environment rule."""
    root = tmp_path / "mail"
    write_script(root, SPAM_RULES)
    server = serve(start_mda, root, sieve={"path": "{home}/active.sieve", **SETTINGS}, hostname="mx.example.test")
    assert [r.code for r in deliver(server, [ALICE], spam_message("Yes, score=7.1 required=5.0", number=1))] == [
        DELIVERED
    ]
    assert len(stored(maildir(root) / ".Junk")) == 1
    assert [r.code for r in deliver(server, [ALICE], spam_message("No, score=1.0", "infected", 2))] == [DELIVERED]
    assert len(stored(maildir(root) / ".Quarantine")) == 1
    assert [r.code for r in deliver(server, [ALICE], spam_message("No, score=-2.0", number=3))] == [DELIVERED]
    # "." is the folder hierarchy separator: Via / mx / example / test.
    assert len(stored(maildir(root) / ".Via.mx.example.test")) == 1
    assert stored(maildir(root)) == []


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"spamtest": {"max_value": 10}}, "status_header is required"),
        ({"spamtest": {"status_header": "X-Spam", "max_value": 10, "bogus": 1}}, "bogus: unknown key"),
        ({"spamtest": {"status_header": "X-Spam"}}, "exactly one of max_header and max_value"),
        ({"spamtest": {"status_header": "X-Spam", "max_value": "ten"}}, "max_value"),
        ({"spamtest": {"status_header": "X-Spam: (a)\\1", "max_value": 10}}, "backreference"),
        ({"virustest": {"status_header": "X-Virus", "status_type": "stars"}}, "status_type must be one of"),
    ],
)
def test_bad_spamtest_settings_are_refused(tmp_path: Path, settings: dict[str, object], fragment: str) -> None:
    config = tmp_path / "mda.yaml"
    config.write_text(yaml.safe_dump(basic_config(tmp_path / "mail", sieve={"path": "{home}/a.sieve", **settings})))
    result = _mda("check-config", "--config", str(config))
    assert result.returncode == 1 and fragment in result.stderr + result.stdout, result


def test_spamtest_settings_are_printed(tmp_path: Path) -> None:
    config = tmp_path / "mda.yaml"
    config.write_text(yaml.safe_dump(basic_config(tmp_path / "mail", sieve={"path": "{home}/a.sieve", **SETTINGS})))
    printed = _mda("check-config", "--config", str(config), "--print")
    assert printed.returncode == 0, printed
    sieve = yaml.safe_load(printed.stdout)["sieve"]
    assert sieve["spamtest"] == {
        "status_header": "x-spam-status: score=(-?[0-9.]+)",
        "status_type": "score",
        "max_value": 10.0,
    }
    assert sieve["virustest"]["text_values"] == SETTINGS["virustest"]["text_values"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ('require ["fileinto", "vnd.dovecot.debug"];\n', 1, "unknown Sieve capability 'vnd.dovecot.debug'"),
        ('require "fileinto";\n\nrequire "x-unheard-of";\n', 3, "unknown Sieve capability 'x-unheard-of'"),
        ('require "regex";\nif header :regex "subject" "(ab)\\\\1" { stop; }\n', 2, "backreference '\\1'"),
        ('require "relational";\nif header :value "more" "x" "1" { stop; }\n', 2, "invalid relation 'more'"),
    ],
)
def test_sieve_check_names_what_mda_refuses(tmp_path: Path, script: str, line: int, fragment: str) -> None:
    root = tmp_path / "mail"
    config = tmp_path / "mda.yaml"
    config.write_text(yaml.safe_dump(basic_config(root, sieve={"path": "{home}/active.sieve"})))
    path = write_script(root, script)
    result = _mda("sieve-check", "--config", str(config), ALICE)
    assert result.returncode == 1, result
    assert result.stdout.startswith(f"{path}:{line}: ") and fragment in result.stdout, result.stdout


def test_include_global_and_personal_scripts_at_delivery(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """``include :global`` finds the site's rules in ``sieve.global_dir``, ``include`` the user's own
    scripts beside the active one; ``mda sieve-check`` names a missing included script with FILE:LINE."""
    root = tmp_path / "mail"
    global_dir = tmp_path / "global"
    global_dir.mkdir()
    (global_dir / "spam.sieve").write_text(
        'require ["fileinto", "mailbox"];\nif header :is "x-spam-flag" "YES" { fileinto :create "Junk"; stop; }\n'
    )
    active = write_script(root, 'require "include";\ninclude :global "spam";\ninclude "mine";\n')
    (active.parent / "mine.sieve").write_text('require ["fileinto", "mailbox"];\nfileinto :create "Mine";\n')
    sieve = {"path": "{home}/active.sieve", "global_dir": str(global_dir)}
    server = serve(start_mda, root, sieve=sieve)
    spam = b"From: <a@example.org>\nSubject: s\nMessage-ID: <i1@example.org>\nX-Spam-Flag: YES\n\nx\n"
    ham = b"From: <a@example.org>\nSubject: h\nMessage-ID: <i2@example.org>\n\nx\n"
    assert [r.code for r in deliver(server, [ALICE], spam)] == [DELIVERED]
    assert [r.code for r in deliver(server, [ALICE], ham)] == [DELIVERED]
    assert len(stored(maildir(root) / ".Junk")) == 1 and len(stored(maildir(root) / ".Mine")) == 1

    config = tmp_path / "mda.yaml"
    config.write_text(yaml.safe_dump(basic_config(root, sieve=sieve)))
    assert _mda("sieve-check", "--config", str(config), ALICE).returncode == 0
    (active.parent / "mine.sieve").unlink()
    result = _mda("sieve-check", "--config", str(config), ALICE)
    assert result.returncode == 1 and result.stdout.startswith(f"{active}:3: included script 'mine' not found"), result


def test_duplicate_discards_the_second_copy_of_a_message(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """RFC 7352: the Message-ID is recorded once the first copy is committed; the same message again
    (a list and a direct copy) is a duplicate, a different one is not."""
    root = tmp_path / "mail"
    write_script(root, 'require ["duplicate", "fileinto", "mailbox"];\nif duplicate { fileinto :create "Dups"; }\n')
    server = serve(start_mda, root)
    first = b"From: <a@example.org>\nSubject: s\nMessage-ID: <same@example.org>\n\nx\n"
    other = b"From: <a@example.org>\nSubject: s\nMessage-ID: <other@example.org>\n\nx\n"
    for data in (first, first, other):
        assert [r.code for r in deliver(server, [ALICE], data)] == [DELIVERED]
    assert len(stored(maildir(root))) == 2
    assert len(stored(maildir(root) / ".Dups")) == 1


def test_notify_mailto_goes_through_submission(
    tmp_path: Path, start_mda: Callable[..., RunningServer], smtp_sink: Sink
) -> None:
    """RFC 5436: the notification leaves from ``<>`` with ``Auto-Submitted: auto-notified`` after the
    message is stored; a message that is itself automatic notifies nobody."""
    root = tmp_path / "mail"
    write_script(
        root,
        'require ["enotify", "variables"];\n'
        'if header :matches "subject" "*" { set "s" "${1}"; }\n'
        'notify :importance "1" :message "New: ${s}" "mailto:phone@example.net?cc=pager%40example.net";\n',
    )
    server = serve(start_mda, root, submission={"host": "127.0.0.1", "port": smtp_sink.port})
    mail = b"From: <a@example.org>\nSubject: lunch\nMessage-ID: <n1@example.org>\n\nx\n"
    assert [r.code for r in deliver(server, [ALICE], mail)] == [DELIVERED]
    assert len(stored(maildir(root))) == 1
    (sent,) = smtp_sink.wait(1)
    assert sent.sender == "<>" and sorted(sent.recipients) == ["pager@example.net", "phone@example.net"]
    assert b"Subject: New: lunch\r\n" in sent.content and b"Auto-Submitted: auto-notified\r\n" in sent.content
    assert b"X-Priority: 1 (Highest)\r\n" in sent.content

    automatic = (
        b"From: <a@example.org>\nSubject: bot\nAuto-Submitted: auto-generated\nMessage-ID: <n2@example.org>\n\nx\n"
    )
    assert [r.code for r in deliver(server, [ALICE], automatic)] == [DELIVERED]
    server.wait_for_log("Auto-Submitted message")
    assert len(smtp_sink.messages) == 1 and len(stored(maildir(root))) == 2
