"""Dovecot's auth-userdb socket: ask the running Dovecot what it knows about a user.

The auth master protocol (Dovecot's "auth protocol" documentation): lines of TAB-separated fields
ending in LF; values use Dovecot's tab-escaping (``\\x01`` then ``0`` NUL, ``1`` itself, ``t`` TAB,
``r`` CR, ``n`` LF), so an address can never add a field or a line. The client sends
``VERSION 1 0``, the server ``VERSION 1 n`` and ``SPID pid``; then ``USER id name service=lmtp`` is
answered ``USER id name key=value…``, ``NOTFOUND id`` or ``FAIL id reason=…``.

One short connection per look-up (the cache in front keeps them rare): nothing to reconnect after
Dovecot restarts, and the socket timeout bounds every step.
"""

from __future__ import annotations

import socket

from mda.userdb.record import LookupKey, Record, UserdbError, record_from_row
from mda.userdb.settings import SourceSettings

MAX_LINE = 65536
_ESCAPES = {"\x01": "\x011", "\0": "\x010", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def tab_escape(value: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in value)


def tab_unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\x01":
            following = next(chars, "")
            out.append(_UNESCAPES.get(following, following))
        else:
            out.append(char)
    return "".join(out)


class DovecotSource:
    driver = "dovecot"

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.label = settings.label
        assert settings.socket is not None
        self._socket_path = str(settings.socket)

    def lookup(self, key: LookupKey) -> Record | None:
        name = key.address if self.settings.key == "address" else key.local
        fields = self._ask(name)
        if fields is None:
            return None
        return record_from_row(self.label, fields)

    def check(self) -> str:
        self._ask("mda-connection-check@invalid")
        return "connected"

    def close(self) -> None:
        pass

    def _ask(self, name: str) -> dict[str, str] | None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.settings.timeout)
                sock.connect(self._socket_path)
                request = f"VERSION\t1\t0\nUSER\t1\t{tab_escape(name)}\tservice={self.settings.service}\n"
                sock.sendall(request.encode("utf-8"))
                reader = sock.makefile("rb")
                version = self._line(reader)
                if version[:2] != ["VERSION", "1"]:
                    raise UserdbError(f"not a Dovecot auth-userdb socket (first line {version[:1]})")
                while True:
                    reply = self._line(reader)
                    if reply[0] in ("SPID", "CUID", "COOKIE", "MECH", "DONE"):
                        continue
                    break
        except OSError as error:
            raise UserdbError(f"{self._socket_path}: {error.strerror or error}") from None
        if len(reply) < 2 or reply[1] != "1":
            raise UserdbError(f"unexpected reply {reply[0][:20]!r}")
        if reply[0] == "NOTFOUND":
            return None
        if reply[0] == "FAIL":
            reason = next((f[len("reason=") :] for f in reply[2:] if f.startswith("reason=")), "")
            raise UserdbError(f"Dovecot failed the look-up: {reason or 'no reason given'}")
        if reply[0] != "USER":
            raise UserdbError(f"unexpected reply {reply[0][:20]!r}")
        fields: dict[str, str] = {}
        for item in reply[3:]:
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    @staticmethod
    def _line(reader: object) -> list[str]:
        line = reader.readline(MAX_LINE)  # type: ignore[attr-defined]
        if not line.endswith(b"\n"):
            raise UserdbError("connection closed or line too long")
        try:
            text = line[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise UserdbError("reply is not UTF-8") from None
        return [tab_unescape(part) for part in text.split("\t")]
