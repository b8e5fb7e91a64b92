"""Characters that must never reach a mailbox path or a trace header field, through real sessions.

Unicode categories Cc (C0 and C1 controls), Cf (bidi overrides, zero-width characters), Zl and Zp
(U+2028, U+2029) are refused in any address, and a local part must be in NFKC form (the Kelvin sign
U+212A is not ``K``): ``501 5.1.3`` at RCPT, ``501 5.1.7`` at MAIL (README, "Recipients").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients import Client
from tests.conftest import basic_config
from tests.policy.helpers import MESSAGE, SENDER

REFUSED = [
    ("C1 control NEL", "a\x85b"),
    ("right-to-left override", "txt.\u202eexe"),
    ("zero-width space", "a\u200bb"),
    ("line separator", "a\u2028b"),
    ("paragraph separator", "a\u2029b"),
    ("Kelvin sign", "\u212aate"),
    ("fullwidth letters", "\uff4b\uff41\uff54\uff45"),
    ("decomposed accent (not NFC)", "jose\u0301"),
]


@pytest.fixture
def server(start_mda, tmp_path):
    config = basic_config(tmp_path / "mail", domains={"example.test": {}, "any.test": {"any_user": True}})
    return start_mda(config)


def _mail_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "any.test").iterdir()) if (root / "any.test").exists() else []


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
def test_refused_in_recipient(server, tmp_path, protocol):
    with Client(server.tcp[protocol][0], timeout=10) as client:
        assert client.cmd(("LHLO" if protocol == "lmtp" else "EHLO") + " client.test").code == 250
        assert client.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8").code == 250
        for name, local in REFUSED:
            reply = client.cmd(f"RCPT TO:<{local}@any.test>".encode())
            assert (reply.code, reply.enhanced) == (501, "5.1.3"), (name, reply)
            # The same characters quoted are refused too: quoting is no way around the rule.
            quoted = client.cmd(f'RCPT TO:<"{local}"@any.test>'.encode())
            assert (quoted.code, quoted.enhanced) == (501, "5.1.3"), (name, quoted)
        assert client.cmd("RCPT TO:<kate@any.test>").code == 250
        assert [r.code for r in client.data(MESSAGE)] == [250]
    assert _mail_dirs(tmp_path / "mail") == ["kate"]


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
def test_refused_in_sender(server, tmp_path, protocol):
    with Client(server.tcp[protocol][0], timeout=10) as client:
        assert client.cmd(("LHLO" if protocol == "lmtp" else "EHLO") + " client.test").code == 250
        for local in ("a\u2028b", "a\x85b", "txt.\u202eexe", "\u212aate"):
            reply = client.cmd(f"MAIL FROM:<{local}@remote.test> SMTPUTF8".encode())
            assert (reply.code, reply.enhanced) == (501, "5.1.7"), (local, reply)
        assert client.cmd("MAIL FROM:<jos\u00e9@remote.test> SMTPUTF8".encode()).code == 250
        assert client.cmd("RCPT TO:<kate@any.test>").code == 250
        assert [r.code for r in client.data(MESSAGE)] == [250]
    [stored] = list((tmp_path / "mail" / "any.test" / "kate" / "Maildir" / "new").iterdir())
    assert stored.read_bytes().startswith("Return-Path: <jos\u00e9@remote.test>\n".encode())


def test_nfc_local_part_is_accepted(server, tmp_path):
    """Composed (NFC) text is NFKC-stable: ``josé`` in one code point is a mailbox like any other."""
    with Client(server.lmtp, timeout=10) as client:
        assert client.cmd("LHLO client.test").code == 250
        assert client.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8").code == 250
        assert client.cmd("RCPT TO:<jos\u00e9@any.test>".encode()).code == 250
        assert [r.code for r in client.data(MESSAGE)] == [250]
    assert _mail_dirs(tmp_path / "mail") == ["jos\u00e9"]
