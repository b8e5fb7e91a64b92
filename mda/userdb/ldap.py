"""LDAP sources (iRedMail, OpenLDAP/AD shops), with ldap3 (``mda[ldap]``).

The filter names ``{address}``, ``{local}``, ``{domain}`` and ``{detail}``; each value is escaped as
RFC 4515 §3 requires (``\\``, ``*``, ``(``, ``)`` and NUL become ``\\5c``, ``\\2a``, ``\\28``, ``\\29``,
``\\00``), so an address can only ever be compared, never add a condition or a wildcard. ``fields``
maps mda's user fields to attribute names; ``alias_field`` names a multi-valued attribute of alias
targets (iRedMail's ``mailForwardingAddress``). One bound connection per thread, opened again after
any error.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any

from mda.userdb.record import GarbageRow, LookupKey, Record, UserdbError, record_from_row, split_goto
from mda.userdb.settings import SourceSettings, read_password_file

_FILTER_PLACEHOLDER = re.compile(r"\{(address|local|domain|detail)\}")
_RFC4515 = {"\\": "\\5c", "*": "\\2a", "(": "\\28", ")": "\\29", "\0": "\\00"}


def escape_filter_value(value: str) -> str:
    """RFC 4515 §3 escaping of an assertion value."""
    return "".join(_RFC4515.get(c, c) for c in value)


def build_filter(template: str, key: LookupKey) -> str:
    values = key.parameters()
    return _FILTER_PLACEHOLDER.sub(lambda m: escape_filter_value(values[m.group(1)]), template)


class LdapSource:
    driver = "ldap"

    def __init__(self, settings: SourceSettings) -> None:
        try:
            import ldap3  # type: ignore[import-untyped]
        except ImportError:
            from mda.userdb.sql import MissingDriver

            raise MissingDriver(
                f"userdb item {settings.index + 1}: driver ldap needs ldap3: pip install 'mda[ldap]'"
            ) from None
        self._ldap3 = ldap3
        self.settings = settings
        self.label = settings.label
        self._password = read_password_file(settings.password_file, f"userdb {self.label}")
        self._server = ldap3.Server(settings.url, connect_timeout=max(1, int(settings.timeout)), get_info=ldap3.NONE)
        self._local = threading.local()
        self._attributes = sorted(
            {*settings.fields.values(), *([settings.alias_field] if settings.alias_field else [])}
        )

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._ldap3.Connection(
                self._server,
                user=self.settings.bind_dn or None,
                password=self._password,
                receive_timeout=max(1, int(self.settings.timeout)),
                auto_bind=True,
                read_only=True,
                raise_exceptions=True,
            )
            self._local.connection = connection
        return connection

    def lookup(self, key: LookupKey) -> Record | None:
        search_filter = build_filter(self.settings.filter, key)
        try:
            connection = self._connection()
            connection.search(
                self.settings.base,
                search_filter,
                search_scope=self._ldap3.SUBTREE,
                attributes=self._attributes,
                size_limit=2,
                time_limit=max(1, int(self.settings.timeout)),
            )
            entries = [e for e in connection.response or () if e.get("type") == "searchResEntry"]
        except self._ldap3.core.exceptions.LDAPNoSuchObjectResult:
            return None
        except self._ldap3.core.exceptions.LDAPSizeLimitExceededResult:
            raise GarbageRow("the filter matched more than one entry") from None
        except Exception as error:
            self._drop()
            secret = self._password or ""
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            raise UserdbError(reason.replace(secret, "***") if secret else reason) from None
        if not entries:
            return None
        if len(entries) > 1:
            raise GarbageRow("the filter matched more than one entry")
        attributes = {name.lower(): value for name, value in entries[0].get("attributes", {}).items()}
        row: dict[str, Any] = {}
        for field, attribute in self.settings.fields.items():
            value = attributes.get(attribute.lower())
            if isinstance(value, list):
                value = value[0] if value else None
            row[field] = value
        aliases = None
        if self.settings.alias_field:
            targets = attributes.get(self.settings.alias_field.lower())
            if targets:
                aliases = split_goto(list(targets) if isinstance(targets, list) else [targets])
        if aliases is not None and not any(target.lower() == key.address for target in aliases):
            return Record(source=self.label, aliases=aliases, shown=f"{self.settings.alias_field}={','.join(aliases)}")
        record = record_from_row(self.label, row, path_base=self.settings.path_base, aliases=aliases)
        return record

    def check(self) -> str:
        try:
            self._connection()
        except Exception as error:
            self._drop()
            raise UserdbError(" ".join(f"{type(error).__name__}: {error}".split())) from None
        return "connected"

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.unbind()

    def close(self) -> None:
        self._drop()
