"""Tokenizer for the Sieve grammar of RFC 5228 §8.1.

Every token carries the line it starts on, so that the parser and validator can report ``FILE:LINE``.
The lexer works on ``str``; :func:`decode_script` turns script bytes into text first and refuses invalid
UTF-8 (RFC 5228 §1: scripts are UTF-8) and NUL octets (excluded from every production of §8.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import SieveError

#: Largest number accepted; Pigeonhole's ``sieve_number_t`` is 64-bit and RFC 5228 §2.4.1 only demands 2**31.
MAX_NUMBER = 2**63 - 1
#: Upper bound on a single string literal, so a hostile script cannot make the engine copy gigabytes.
MAX_STRING = 1 << 20

_QUANTIFIERS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # RFC 5228 §2.4.1


class Kind(Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    PUNCT = "punctuation"
    END = "end of script"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    value: str | int
    line: int


_SPACE = re.compile(r"[ \t\r\n]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"([0-9]+)([KMGkmg]?)")
_MULTILINE_HEAD = re.compile(r"text:[ \t]*(?:#[^\n]*)?\r?\n")
_PUNCT = frozenset("[](){},;")


def decode_script(data: bytes, name: str) -> str:
    """Decode script bytes, naming the line of the first invalid octet."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SieveError(name, line, "script is not valid UTF-8") from None
    return text


def tokenize(text: str, name: str) -> list[Token]:
    """Split ``text`` into tokens; unterminated strings and comments are errors at their first line."""
    nul = text.find("\0")
    if nul >= 0:
        raise SieveError(name, text.count("\n", 0, nul) + 1, "NUL character in script")
    tokens: list[Token] = []
    pos, line, end = 0, 1, len(text)
    while pos < end:
        ch = text[pos]
        if ch in " \t\r\n":
            m = _SPACE.match(text, pos)
            assert m is not None
            line += m.group().count("\n")
            pos = m.end()
        elif ch == "#":
            nl = text.find("\n", pos)
            pos = end if nl < 0 else nl
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                raise SieveError(name, line, "unterminated comment")
            line += text.count("\n", pos, close)
            pos = close + 2
        elif ch == '"':
            value, new_pos = _quoted(text, pos, name, line)
            tokens.append(Token(Kind.STRING, value, line))
            line += text.count("\n", pos, new_pos)
            pos = new_pos
        elif ch in _PUNCT:
            tokens.append(Token(Kind.PUNCT, ch, line))
            pos += 1
        elif ch == ":":
            m = _IDENT.match(text, pos + 1)
            if m is None:
                raise SieveError(name, line, "expected a tag name after ':'")
            tokens.append(Token(Kind.TAG, m.group().lower(), line))
            pos = m.end()
        elif ch.isascii() and ch.isdigit():
            m = _NUMBER.match(text, pos)
            assert m is not None
            number = int(m.group(1)) * _QUANTIFIERS[m.group(2).upper()]
            if number > MAX_NUMBER:
                raise SieveError(name, line, f"number {m.group()} is too large")
            tokens.append(Token(Kind.NUMBER, number, line))
            pos = m.end()
        elif (mh := _MULTILINE_HEAD.match(text, pos)) is not None:
            value, new_pos = _multiline(text, mh.end(), name, line)
            tokens.append(Token(Kind.STRING, value, line))
            line += text.count("\n", pos, new_pos)
            pos = new_pos
        elif (m := _IDENT.match(text, pos)) is not None:
            word = m.group()
            if text.startswith(":", m.end()) and word.lower() == "text":
                raise SieveError(name, line, "'text:' must be followed by a line break")
            tokens.append(Token(Kind.IDENTIFIER, word.lower(), line))
            pos = m.end()
        else:
            raise SieveError(name, line, f"unexpected character {ch!r}")
    tokens.append(Token(Kind.END, "", line))
    return tokens


_QUOTED_BODY = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_BARE_LF = re.compile(r"(?<!\r)\n")


def _quoted(text: str, pos: int, name: str, line: int) -> tuple[str, int]:
    """Read a quoted string (RFC 5228 §2.4.2): only ``\\\\`` and ``\\"`` are escapes; any other
    backslash is dropped and the next character taken literally. Linear time on hostile input."""
    m = _QUOTED_BODY.match(text, pos + 1)
    if m is None:
        raise SieveError(name, line, "unterminated string")
    if m.end() - pos > MAX_STRING:
        raise SieveError(name, line, f"string longer than {MAX_STRING} characters")
    value = _ESCAPE.sub(r"\1", m.group()[:-1])
    if "\n" in value:  # a line break inside a quoted string is CRLF, as in Pigeonhole (and text: strings)
        value = _BARE_LF.sub("\r\n", value)
    return value, m.end()


def _multiline(text: str, pos: int, name: str, line: int) -> tuple[str, int]:
    """Read a ``text:`` string body (RFC 5228 §2.4.2): lines up to a lone ``.``; a leading ``..`` loses
    one dot. Lines are joined with CRLF as the RFC's grammar writes them."""
    out: list[str] = []
    i = pos
    while True:
        nl = text.find("\n", i)
        if nl < 0:
            raise SieveError(name, line, "unterminated multi-line string (missing '.' line)")
        raw = text[i:nl].removesuffix("\r")
        i = nl + 1
        if raw == ".":
            break
        out.append(raw[1:] if raw.startswith("..") else raw)
        if i - pos > MAX_STRING:
            raise SieveError(name, line, f"string longer than {MAX_STRING} characters")
    return "".join(f"{ln}\r\n" for ln in out), i
