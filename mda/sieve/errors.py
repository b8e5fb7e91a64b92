"""Errors raised by the Sieve engine.

Compile errors name the script and line so that a user can fix a broken script from the log line alone,
in the same ``FILE:LINE: message`` shape that compilers and Pigeonhole's ``sievec`` use.
"""

from __future__ import annotations


class SieveError(Exception):
    """A script that cannot be compiled; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


class SieveRuntimeError(Exception):
    """An error while running a compiled script (e.g. conflicting actions, RFC 5228 §2.10.6).

    The interpreter turns it into an entry of ``Outcome.errors`` and falls back to the implicit keep, as
    Pigeonhole does; it never escapes :func:`mda.sieve.run`.
    """

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message
