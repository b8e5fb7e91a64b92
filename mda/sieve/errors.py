"""Errors raised by the Sieve engine.

Compile errors name the script and line so that a user can fix a broken script from the log line alone,
in the same ``FILE:LINE: message`` shape that compilers and Pigeonhole's ``sievec`` use. Runtime errors
leave the engine as :class:`RuntimeFault` records, so the file, line and message reach the log as they
were raised, whatever characters the file name holds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuntimeFault:
    """Where a script failed while running and why; ``str()`` is ``FILE:LINE: message``."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class SieveError(Exception):
    """A script that cannot be compiled; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


class SieveRuntimeError(Exception):
    """An error while running a compiled script (e.g. conflicting actions, RFC 5228 §2.10.6).

    The engine turns it into a :class:`RuntimeFault` in ``Outcome.errors`` and falls back to the implicit
    keep, as Pigeonhole does; it never escapes :func:`mda.sieve.run`.
    """

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message

    @property
    def fault(self) -> RuntimeFault:
        return RuntimeFault(self.file, self.line, self.message)
