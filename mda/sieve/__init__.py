"""Sieve mail filtering (RFC 5228 and extensions) for final delivery, matching Dovecot Pigeonhole.

Compile once (:func:`compile_file` caches by mtime and size), run per recipient (:func:`run`), act on
:class:`Outcome`. Sending a vacation reply: :func:`build_reply`, then ``VacationState.record``.
"""

from .actions import Action, Discard, FileInto, Keep, Redirect, Reject, Vacation
from .compiler import CAPABILITIES, Script
from .engine import Outcome, SieveEnvelope, compile_file, compile_text, run
from .errors import RuntimeFault, SieveError
from .ext_enotify import Notify
from .settings import HeaderSpec, ScoreTest, SieveSettings
from .vacation import VacationState, build_reply

__all__ = [
    "CAPABILITIES",
    "Action",
    "Discard",
    "FileInto",
    "HeaderSpec",
    "Keep",
    "Notify",
    "Outcome",
    "Redirect",
    "Reject",
    "RuntimeFault",
    "ScoreTest",
    "Script",
    "SieveEnvelope",
    "SieveError",
    "SieveSettings",
    "Vacation",
    "VacationState",
    "build_reply",
    "compile_file",
    "compile_text",
    "run",
]
