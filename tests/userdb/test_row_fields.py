"""How rows read: Dovecot's mail and quota_rule fields, paths, and the escaping of every driver."""

from __future__ import annotations

import pytest

from mda.userdb.dovecot import tab_escape, tab_unescape
from mda.userdb.ldap import build_filter, escape_filter_value
from mda.userdb.passwdfile import parse_passwd_file
from mda.userdb.record import GarbageRow, LookupKey, parse_mail_location, parse_quota_rule, record_from_row
from mda.userdb.settings import query_placeholders
from mda.userdb.sql import to_pyformat


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("*:storage=1G", (1024**3, None)),
        ("*:storage=1048576", (1024**3, None)),  # Dovecot: a bare storage= number is kilobytes
        ("*:bytes=1000", (1000, None)),
        ("*:storage=100M:messages=5000", (100 * 1024**2, 5000)),
        ("*:storage=0", (None, None)),
    ],
)
def test_quota_rules(rule, expected):
    assert parse_quota_rule(rule) == expected


@pytest.mark.parametrize("rule", ["Trash:storage=+100M", "*:storage=lots", "*:size=1G", "storage=1G"])
def test_quota_rules_mda_cannot_use(rule):
    with pytest.raises(ValueError):
        parse_quota_rule(rule)


def test_mail_locations():
    assert parse_mail_location("maildir:~/Maildir", "/home/a") == ("maildir", "/home/a/Maildir")
    assert parse_mail_location("maildir:%h/Maildir:LAYOUT=fs", "/home/a") == ("maildir", "/home/a/Maildir")
    assert parse_mail_location("mbox:~/mail:INBOX=~/mbox", "/home/a") == ("mbox", "/home/a/mbox")
    for bad in ("sdbox:~/dbox", "maildir", "maildir:~/Maildir"):
        with pytest.raises(ValueError):
            parse_mail_location(bad, None if bad.endswith("Maildir") else "/h")


def test_rows_that_are_garbage():
    for row in (
        {"path": "relative/Maildir"},
        {"path": "/var/vmail/../etc"},
        {"home": "/h\n/x"},
        {"quota": "-1"},
        {"uid": 0},
        {"gid": 5000},
        {"create_folders": "maybe"},
        {"format": "dbox"},
    ):
        with pytest.raises(GarbageRow):
            record_from_row("test", row)


def test_row_fields_and_path_base(tmp_path):
    record = record_from_row(
        "test", {"path": "example.test/alice/", "quota": 0, "create_folders": "t", "Unknown": 1}, path_base=tmp_path
    )
    assert record.user is not None
    assert record.user.path == f"{tmp_path}/example.test/alice"
    assert record.user.quota is None  # 0: no quota, as Postfixadmin writes it
    assert record.user.create_folders is True
    assert record.user.root == str(tmp_path)
    outside = record_from_row("test", {"path": "/elsewhere/alice"}, path_base=tmp_path)
    assert outside.user is not None and outside.user.root is None


def test_passwd_file_lines():
    rows = parse_passwd_file(
        "# comment\n\nAlice@Example.test:{PLAIN}pw:5000:5000::/h/alice::userdb_mail=maildir:~/M "
        "userdb_quota_rule=*:storage=1G nopassword\nbob:x\n"
    )
    assert rows["alice@example.test"] == {
        "uid": "5000",
        "gid": "5000",
        "home": "/h/alice",
        "mail": "maildir:~/M",
        "quota_rule": "*:storage=1G",
    }
    assert rows["bob"] == {}
    assert all("pw" not in str(row) for row in rows.values())


@pytest.mark.parametrize("value", ["a\tb", "a\nUSER\t2\troot", "\x01", "\0", "plain", "ünïcode"])
def test_dovecot_tab_escaping_round_trips(value):
    escaped = tab_escape(value)
    assert not any(c in escaped for c in "\t\n\r\0")
    assert tab_unescape(escaped) == value


def test_ldap_filter_values_are_escaped():
    assert escape_filter_value("*)(uid=*") == "\\2a\\29\\28uid=\\2a"
    assert escape_filter_value("a\\b\0") == "a\\5cb\\00"
    key = LookupKey("x)(|(mail=*", "example.test")
    assert build_filter("(mail={address})", key) == "(mail=x\\29\\28|\\28mail=\\2a@example.test)"


def test_sql_placeholders():
    query = "SELECT '%' || x::text, ':local' FROM t WHERE a = :address AND b LIKE 'x%' AND c = :domain"
    assert query_placeholders(query) == ["address", "domain"]
    assert to_pyformat(query) == (
        "SELECT '%%' || x::text, ':local' FROM t WHERE a = %(address)s AND b LIKE 'x%%' AND c = %(domain)s"
    )
