"""Realistic message content for the benchmarks: what real mail looks like, not smtp-source's filler.

The cost of reading DATA can depend on content (a reader that stops at every ``.`` at the end of a line
is fast on filler and slow on prose), so the benchmarks send the kinds of message people receive:

- ``prose``: text/plain, hard-wrapped at 72 columns, sentences ending at line ends, now and then a line
  that starts with a period (dot-stuffed on the wire);
- ``html``: text/html in quoted-printable, soft line breaks (``=`` at the end of 76-column lines);
- ``attachment``: multipart/mixed, a tenth text, the rest a base64 attachment (76-column lines);
- ``multipart``: multipart/mixed with a multipart/alternative (prose + quoted-printable HTML) and a
  base64 attachment, a third each;

and, for the in-process DATA benchmark only, the shapes that stress a reader in other ways:

- ``filler``: lines like smtp-source's, none ending with a period;
- ``long-lines``: 16 KiB lines (an encoder that never wraps);
- ``bare-lf``: prose whose lines end in a bare LF on the wire (stored with ``bare_newline: normalize``).

Every message is made from a seed, so two runs send the same bytes. :func:`message` returns the stored
form (LF line ends); :func:`wire` the DATA payload a client sends (CRLF, dot-stuffed, with the end marker).
"""

from __future__ import annotations

import base64
import random
import textwrap

KINDS = ("prose", "html", "attachment", "multipart")
DATA_KINDS = (*KINDS, "filler", "long-lines", "bare-lf")

_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up about "
    "message delivery mailbox server quota folder sender recipient report meeting invoice schedule project "
    "attached please regards thanks tomorrow review update agreed draft budget customer order shipping "
    "account password security notice weekly team office holiday travel Monday Friday results numbers"
)
_WORDS = _VOCABULARY.split()


def message(kind: str, size: int, seed: int = 1) -> bytes:
    """A message of about ``size`` bytes (header included) as stored: LF line ends, not stuffed."""
    rng = random.Random(f"{kind}:{size}:{seed}")
    if kind in ("prose", "bare-lf"):
        return _header(rng, "text/plain; charset=utf-8", "8bit") + _prose(rng, size)
    if kind == "html":
        return _header(rng, "text/html; charset=utf-8", "quoted-printable") + _html_qp(rng, size)
    if kind == "attachment":
        return _mixed(rng, [_text_part(rng, size // 10), _base64_part(rng, size - size // 10)])
    if kind == "multipart":
        third = size // 3
        alternative = _multipart(rng, "alternative", [_text_part(rng, third // 2), _html_part(rng, third // 2)])
        return _mixed(rng, [alternative, _text_part(rng, third), _base64_part(rng, third)])
    if kind == "filler":
        return _header(rng, "text/plain", "7bit") + _filler(size)
    if kind == "long-lines":
        return _header(rng, "text/plain", "8bit") + _long_lines(rng, size)
    raise ValueError(f"unknown content kind {kind!r}; known: {', '.join(DATA_KINDS)}")


def wire(kind: str, size: int, seed: int = 1) -> bytes:
    """The DATA payload for :func:`message`: CRLF line ends (bare LF for ``bare-lf``), dot-stuffed,
    ending with CRLF ``.`` CRLF."""
    stored = message(kind, size, seed)
    newline = b"\n" if kind == "bare-lf" else b"\r\n"
    lines = stored.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    # After a bare LF a line does not start, for SMTP: only lines after CRLF are dot-stuffed.
    stuffed = (b"." + line if line.startswith(b".") and kind != "bare-lf" else line for line in lines)
    body = newline.join(stuffed)
    if kind == "bare-lf":
        # The header section and the last line still end in CRLF: only the body's lines are bare.
        head, _, rest = body.partition(b"\n\n")
        body = head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + rest
    return body + b"\r\n.\r\n"


def _header(rng: random.Random, content_type: str, encoding: str) -> bytes:
    number = rng.randrange(10**9)
    return (
        f"From: Sender {number % 97} <sender{number % 97}@example.org>\n"
        f"To: user@bench.test\n"
        f"Subject: {' '.join(rng.choice(_WORDS) for _ in range(6))}\n"
        f"Date: Tue, 01 Dec 2026 10:{number % 60:02d}:00 +0000\n"
        f"Message-ID: <{number}.{rng.randrange(10**6)}@example.org>\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: {content_type}\n"
        f"Content-Transfer-Encoding: {encoding}\n"
        "\n"
    ).encode()


def _sentences(rng: random.Random, size: int) -> str:
    sentences: list[str] = []
    length = 0
    while length < size:
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(4, 18))]
        sentence = " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", ","))
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def _prose(rng: random.Random, size: int) -> bytes:
    """Paragraphs wrapped at 72 columns; a wrap right after a sentence puts its period at a line end."""
    lines: list[str] = []
    length = 0
    while length < size:
        paragraph = textwrap.wrap(_sentences(rng, rng.randrange(200, 900)), 72)
        if rng.random() < 0.05:
            paragraph.append("...and so on.")  # a line starting with a period, stuffed on the wire
        lines += [*paragraph, ""]
        length += sum(len(line) + 1 for line in paragraph) + 1
    return _trim("\n".join(lines), size)


def _html_qp(rng: random.Random, size: int) -> bytes:
    html: list[str] = ['<html><head><meta charset="utf-8"></head><body style="font-family: Arial">']
    length = len(html[0])
    while length < size:
        paragraph = f'<p class="c{rng.randrange(9)}">{_sentences(rng, rng.randrange(150, 600))}</p>'
        html.append(paragraph)
        length += len(paragraph)  # trimmed to size once encoded (quoted-printable only grows)
    html.append("</body></html>")
    return _trim(_quoted_printable("".join(html)), size)


def _quoted_printable(text: str) -> str:
    encoded = text.replace("=", "=3D")
    lines = [encoded[i : i + 75] for i in range(0, len(encoded), 75)]
    return "=\n".join(lines) + "\n"


def _filler(size: int) -> bytes:
    line = "La de da de da 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return _trim("\n".join([line] * (size // (len(line) + 1) + 1)), size)


def _long_lines(rng: random.Random, size: int) -> bytes:
    lines = [_sentences(rng, 16 * 1024)[: 16 * 1024] for _ in range(size // (16 * 1024) + 1)]
    return _trim("\n".join(lines), size)


def _trim(text: str, size: int) -> bytes:
    data = text.encode()[:size]
    return data if data.endswith(b"\n") else data + b"\n"


def _text_part(rng: random.Random, size: int) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + _prose(rng, size)


def _html_part(rng: random.Random, size: int) -> bytes:
    return b"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + _html_qp(
        rng, size
    )


def _base64_part(rng: random.Random, size: int) -> bytes:
    raw = rng.randbytes(size * 3 // 4)
    encoded = base64.encodebytes(raw)  # 76-column lines, LF ends
    return (
        b"Content-Type: application/pdf; name=report.pdf\n"
        b"Content-Disposition: attachment; filename=report.pdf\n"
        b"Content-Transfer-Encoding: base64\n\n" + encoded
    )


def _multipart(rng: random.Random, subtype: str, parts: list[bytes]) -> bytes:
    boundary = f"=_{rng.randrange(16**16):016x}".encode()
    body = b"".join(b"--" + boundary + b"\n" + part + b"\n" for part in parts) + b"--" + boundary + b"--\n"
    return b"Content-Type: multipart/" + subtype.encode() + b'; boundary="' + boundary + b'"\n\n' + body


def _mixed(rng: random.Random, parts: list[bytes]) -> bytes:
    inner = _multipart(rng, "mixed", parts)
    head, _, body = inner.partition(b"\n\n")
    content_type = head.removeprefix(b"Content-Type: ").decode()
    return _header(rng, content_type, "7bit") + body
