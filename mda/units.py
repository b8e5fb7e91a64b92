"""Size and duration values as written in configuration files.

Sizes take ``K``, ``M``, ``G`` suffixes in powers of 1024 (as Dovecot reads them) or plain bytes;
durations take ``s``, ``m``, ``h``, ``d`` or plain seconds. Both parsers raise ``ValueError`` with a
message fit for an operator, which the config loader prefixes with file, line and key.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_UNITS = {"": 1.0, "S": 1.0, "M": 60.0, "H": 3600.0, "D": 86400.0}
_NUMBER_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]?)\s*$")


def parse_size(value: object) -> int:
    """Return a size in bytes from ``25M``, ``1G``, ``4096`` (an int or a string)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 25M, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _NUMBER_WITH_UNIT.match(str(value))
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 25M or 4096, got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def parse_duration(value: object) -> float:
    """Return seconds from ``30s``, ``5m``, ``1d``, ``0`` (an int, float or string)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _NUMBER_WITH_UNIT.match(str(value))
    if not match or match.group(2).upper() not in _DURATION_UNITS:
        raise ValueError(f"expected a duration like 30s, 5m, 1d, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).upper()]
