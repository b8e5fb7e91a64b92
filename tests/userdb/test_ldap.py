"""The ldap driver against a private slapd: users with attribute mapping, an alias entry, the injection
table (RFC 4515 escaping of filter values), and slapd killed mid-run (451, then recovery)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Slapd, slapd_server
from tests.userdb.helpers import deliver, messages, rcpt_codes, userdb_config
from tests.userdb.test_postgresql import INJECTION_TABLE
from tests.waiting import wait_for

OK = (250, "2.1.5")
UNKNOWN = (550, "5.1.1")
DEFERRED = (451, "4.3.0")
POSIX = ("inetOrgPerson", "posixAccount")


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    with slapd_server() as server:
        vmail = tmp_path / "vmail"
        posix = {"uidNumber": 5000, "gidNumber": 5000}
        server.add_user("dave", {"mail": "dave@example.test", "homeDirectory": f"{vmail}/dave", **posix}, POSIX)
        server.add_user("erin", {"mail": "erin@example.test", "carLicense": "erin/Maildir", "employeeNumber": "1M"})
        server.add_user("obrien", {"mail": "o'brien@example.test"})
        server.add_user(
            "team", {"mail": "team@example.test", "description": ["dave@example.test", "erin@example.test"]}
        )
        yield server


def _source(slapd: Slapd, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    password_file = tmp_path / "ldap-password"
    password_file.write_text(ADMIN_PASSWORD)
    return {
        "driver": "ldap",
        "url": slapd.url,
        "bind_dn": ADMIN_DN,
        "password_file": str(password_file),
        "base": f"ou=people,{SUFFIX}",
        "filter": "(&(objectClass=inetOrgPerson)(mail={address}))",
        "fields": {"home": "homeDirectory", "path": "carLicense", "quota": "employeeNumber"},
        "alias_field": "description",
        "path_base": str(tmp_path / "vmail"),
        "timeout": "2s",
        **extra,
    }


@pytest.mark.root
def test_ldap_users_aliases_and_injection(start_mda, tmp_path, slapd):
    server = start_mda(userdb_config(tmp_path / "mail", [_source(slapd, tmp_path)]))
    assert rcpt_codes(server.lmtp, ["dave@example.test", "nobody@example.test", "alice@example.test"]) == [
        OK,
        UNKNOWN,
        OK,
    ]
    assert deliver(server.lmtp, ["team@example.test"]) == [OK, (250, "2.0.0")]
    vmail = tmp_path / "vmail"
    assert len(messages(vmail / "erin" / "Maildir")) == 1
    assert len(messages(tmp_path / "mail" / "example.test" / "dave" / "Maildir")) == 1  # home only: storage.path
    # mail is an IA5String (ASCII): no entry can hold jürgen@, whose look-up must still just miss.
    expected = {**dict(INJECTION_TABLE), "jürgen@example.test": UNKNOWN}
    addresses = list(expected)
    got = rcpt_codes(server.lmtp, addresses, smtputf8=True)
    assert dict(zip(addresses, got, strict=True)) == expected
    assert "event=userdb_error" not in server.log()
    assert ADMIN_PASSWORD not in server.log()


@pytest.mark.root
def test_ldap_killed_mid_run_defers_then_recovers(start_mda, tmp_path, slapd):
    server = start_mda(userdb_config(tmp_path / "mail", [_source(slapd, tmp_path)]))
    assert rcpt_codes(server.lmtp, ["dave@example.test"]) == [OK]
    slapd.stop()
    try:
        assert rcpt_codes(server.lmtp, ["erin@example.test", "alice@example.test"]) == [DEFERRED, OK]
        log = server.wait_for_log("event=userdb_error")
        assert "driver=ldap" in log and ADMIN_PASSWORD not in log
    finally:
        slapd.start()
    wait_for(lambda: rcpt_codes(server.lmtp, ["erin@example.test"]) == [OK], timeout=20, interval=0.2)
