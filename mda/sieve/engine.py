"""The public entry points: compile scripts (with a file cache) and run them for one delivery."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .actions import Action, Keep, ResultBuilder, Vacation
from .compiler import Script, compile_commands
from .errors import SieveError, SieveRuntimeError
from .ext_duplicate import Seen
from .ext_include import link
from .interpreter import Context, execute, lower
from .lexer import decode_script
from .message import SieveMessage
from .parser import parse
from .settings import DEFAULT_SETTINGS, SieveSettings
from .vacation import VacationState, decide

#: Pigeonhole's default ``sieve_max_script_size`` (1 MiB).
MAX_SCRIPT_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class SieveEnvelope:
    """The SMTP/LMTP envelope of one recipient's delivery."""

    sender: str  # "" for the null reverse-path <>
    recipient: str  # as accepted at RCPT, e.g. "alice+lists@example.test"
    original_recipient: str | None = None  # ORCPT (RFC 3461), if the client sent one


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with the message for this recipient.

    ``actions`` is never empty: it holds the stores, redirects, reject, a ``Discard`` when nothing
    delivers the message, and a ``Vacation`` only when the reply rules say to answer. After a runtime
    error ``actions`` is the implicit keep alone and ``errors`` says why (RFC 5228 §2.10.6).
    """

    actions: tuple[Action, ...]
    errors: tuple[str, ...] = ()
    #: Why no vacation reply is sent although the script asked for one (for the log), else None.
    vacation_skipped: str | None = None
    #: IDs the ``duplicate`` tests saw: the caller records them (``VacationState.record_duplicates``)
    #: once the copies are committed.
    duplicates: tuple[Seen, ...] = ()

    @property
    def vacation(self) -> Vacation | None:
        return next((a for a in self.actions if isinstance(a, Vacation)), None)


def compile_text(text: str, name: str) -> Script:
    """Compile script text; ``name`` is the file name errors report."""
    if len(text) > MAX_SCRIPT_SIZE:
        raise SieveError(name, 1, f"script larger than {MAX_SCRIPT_SIZE} bytes")
    return lower(compile_commands(parse(text, name), name))


_cache: dict[Path, tuple[tuple[int, int], Script]] = {}
_cache_lock = threading.Lock()


def compile_file(path: Path, global_dir: Path | None = None) -> Script:
    """Compile a script file, reusing the result until the file's mtime or size change.

    A file that fails to compile is not cached, so every delivery reports the error until it is fixed.
    The scripts it includes (RFC 6609) are looked up and compiled too, on every call: ``:personal`` ones
    beside it, ``:global`` ones in ``global_dir``.
    """
    script = compile_cached(path)
    if "include" in script.extensions:  # the common script pays no path resolution
        link(script, path.parent, global_dir, (path.resolve(),))
    return script


def compile_cached(path: Path) -> Script:
    """:func:`compile_file` without looking at included scripts."""
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    name = str(path)
    if stat.st_size > MAX_SCRIPT_SIZE:
        raise SieveError(name, 1, f"script larger than {MAX_SCRIPT_SIZE} bytes")
    script = compile_text(decode_script(path.read_bytes(), name), name)
    with _cache_lock:
        _cache[path] = (key, script)
    return script


def run(
    scripts: Sequence[Script],
    message: bytes,
    envelope: SieveEnvelope,
    *,
    delimiter: str = "+",
    vacation_state: VacationState | None = None,
    now: float | None = None,
    settings: SieveSettings = DEFAULT_SETTINGS,
) -> Outcome:
    """Run ``scripts`` (sieve_before…, the user's, sieve_after…) for one recipient.

    As in Pigeonhole, ``stop`` ends only its own script, and the next script runs only while the message
    is still kept (implicit keep in force, or an explicit ``keep``): a ``fileinto``, ``redirect``,
    ``reject`` or ``discard`` in a before script means the user's script does not run.

    ``delimiter`` lists the subaddress separator characters (Dovecot's ``recipient_delimiter``).
    ``settings`` are the site's (spamtest, environment, global scripts); ``now`` is the clock of
    ``currentdate`` and of the vacation record. ``vacation_state`` is only read here; the caller records a
    sent reply with ``vacation_state.record(outcome.vacation)``.
    """
    result = ResultBuilder()
    msg = SieveMessage(message)
    ctx = Context(
        msg,
        envelope.sender,
        envelope.recipient,
        envelope.original_recipient,
        delimiter,
        result,
        now,
        settings,
        vacation_state,
    )
    try:
        flags = execute(scripts, ctx)
    except SieveRuntimeError as exc:
        # RFC 5228 §2.10.6 / Pigeonhole: a failed run delivers by the implicit keep alone.
        return Outcome((Keep(),), (str(exc),))
    actions = result.final(flags)
    skipped: str | None = None
    if result.vacation is not None:
        reply, why = decide(
            result.vacation,
            msg,
            envelope.sender,
            envelope.recipient,
            envelope.original_recipient,
            vacation_state,
            time.time() if now is None else now,
        )
        if reply is not None:
            actions.append(reply)
        else:
            skipped = why
    return Outcome(tuple(actions), (), skipped, tuple(ctx.duplicates))
