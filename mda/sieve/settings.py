"""What the administrator configures for Sieve beyond the scripts (``sieve:`` in the configuration).

These are Pigeonhole's ``sieve_spamtest_*``/``sieve_virustest_*`` settings (RFC 5235 leaves the source
of the scores to the site), the values of the ``environment`` test (RFC 5183) and the directory of
``include :global`` scripts (RFC 6609), gathered in one immutable value passed to :func:`mda.sieve.run`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .ext_regex import RegexError, compile_pattern

STATUS_TYPES = ("score", "strlen", "text")
_DECIMAL = re.compile(r"[+-]?[0-9]{0,5}(?:[.,][0-9]{0,5})?")


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """``FIELD`` or ``FIELD: REGEX`` (Pigeonhole's syntax): the field to read and, optionally, a regular
    expression whose first group is the value."""

    field: str
    regex: str | None = None

    @classmethod
    def parse(cls, text: str) -> HeaderSpec:
        """Parse the Pigeonhole syntax; raises ValueError saying what is wrong."""
        name, colon, regex = text.strip().partition(":")
        name = name.strip()
        if not name or any(c in name for c in " \t"):
            raise ValueError(f"invalid header specification '{text}' (expected FIELD or FIELD: REGEX)")
        if not colon:
            return cls(name.lower())
        regex = regex.strip()
        try:
            compile_pattern(regex, False)
        except RegexError as exc:
            raise ValueError(str(exc)) from None
        return cls(name.lower(), regex)


@dataclass(frozen=True, slots=True)
class ScoreTest:
    """How ``spamtest`` or ``virustest`` reads a message's score (RFC 5235 §3)."""

    status_header: HeaderSpec
    status_type: str = "score"
    max_header: HeaderSpec | None = None
    max_value: float | None = None
    #: For ``status_type: text``: the status text for 0, 1, … (empty for none).
    text_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status_type not in STATUS_TYPES:
            raise ValueError(f"status_type must be one of {', '.join(STATUS_TYPES)}")
        if self.status_type != "text" and (self.max_header is None) == (self.max_value is None):
            raise ValueError("give exactly one of max_header and max_value")


def parse_decimal(text: str) -> float | None:
    """A score as Pigeonhole reads it: optional sign, up to 5 digits, ``.`` or ``,``, up to 5 digits;
    None for anything else (the test then sees "0", not tested)."""
    if not text or _DECIMAL.fullmatch(text) is None:
        return None
    sign = -1.0 if text[0] == "-" else 1.0
    whole, _, fraction = text.lstrip("+-").replace(",", ".").partition(".")
    return sign * (int(whole or 0) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0))


@dataclass(frozen=True, slots=True)
class SieveSettings:
    spamtest: ScoreTest | None = None
    virustest: ScoreTest | None = None
    #: ``environment`` items (RFC 5183 §4) the site provides, e.g. ``host``, ``domain``.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Where ``include :global`` finds scripts (RFC 6609 §2.2); None: no global scripts.
    global_dir: Path | None = None


DEFAULT_SETTINGS = SieveSettings()
