"""The public entry points: compile scripts (with a file cache) and run them for one delivery."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .actions import Action, Keep, ResultBuilder, Vacation
from .budget import DEFAULT_WORK_LIMIT, Meter, WorkLimitExceeded
from .compiler import Script, compile_commands
from .errors import RuntimeFault, SieveError, SieveRuntimeError
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
    errors: tuple[RuntimeFault, ...] = ()
    #: Why no vacation reply is sent although the script asked for one (for the log), else None.
    vacation_skipped: str | None = None
    #: IDs the ``duplicate`` tests saw: the caller records them (``VacationState.record_duplicates``)
    #: once the copies are committed.
    duplicates: tuple[Seen, ...] = ()
    #: The header section as editheader (RFC 5293) left it, for stored copies and redirects (the body
    #: is unchanged); None when no script edited it, or after a runtime error.
    header: bytes | None = None

    @property
    def vacation(self) -> Vacation | None:
        return next((a for a in self.actions if isinstance(a, Vacation)), None)


def compile_text(text: str, name: str) -> Script:
    """Compile script text; ``name`` is the file name errors report."""
    if len(text) > MAX_SCRIPT_SIZE:
        raise SieveError(name, 1, f"script larger than {MAX_SCRIPT_SIZE} bytes")
    return lower(compile_commands(parse(text, name), name))


_cache: dict[Path, tuple[tuple[int, int, int, int], Script | SieveError]] = {}
_cache_lock = threading.Lock()


def compile_file(
    path: Path, global_dir: Path | None = None, *, opener: Callable[[Path], tuple[int, os.stat_result]] | None = None
) -> Script:
    """:func:`compile_cached`, then the scripts it includes (RFC 6609), looked up and compiled on every
    call: ``:personal`` ones beside it, ``:global`` ones in ``global_dir``."""
    script = compile_cached(path, opener=opener)
    if "include" in script.extensions:  # the common script pays no path resolution
        link(script, path.parent, global_dir, (path.resolve(),))
    return script


def compile_cached(path: Path, *, opener: Callable[[Path], tuple[int, os.stat_result]] | None = None) -> Script:
    """Compile a script file, reusing the result until the file (inode, mtime or size) changes.

    ``opener`` returns a read descriptor for ``path`` and its ``fstat`` (the caller's checks, e.g. a
    user's home, take that anyway: a cached script then costs no second one); by default the file is
    opened with ``O_NONBLOCK``, so a FIFO cannot hang the caller. Only a regular
    file of at most ``MAX_SCRIPT_SIZE`` bytes is read, and never more than that many bytes, whatever it
    claims (``/dev/zero`` has size 0). A file that fails to compile raises its error on every delivery
    until it is fixed; the error is cached like a script, so that a broken 1 MiB script is not parsed
    again for every message.
    """
    name = str(path)
    if opener is not None:
        fd, info = opener(path)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
    try:
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", name)
        if not stat.S_ISREG(info.st_mode):
            raise SieveError(name, 1, "not a regular file")
        key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        with _cache_lock:
            cached = _cache.get(path)
        if cached is not None and cached[0] == key:
            return _result(cached[1])
        if info.st_size > MAX_SCRIPT_SIZE:
            raise SieveError(name, 1, f"script larger than {MAX_SCRIPT_SIZE} bytes")
        data = _read_at_most(fd, MAX_SCRIPT_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SCRIPT_SIZE:
        raise SieveError(name, 1, f"script larger than {MAX_SCRIPT_SIZE} bytes")
    result: Script | SieveError
    try:
        result = compile_text(decode_script(data, name), name)
    except SieveError as error:
        result = error
    with _cache_lock:
        _cache[path] = (key, result)
    return _result(result)


def _result(cached: Script | SieveError) -> Script:
    """The script, or a fresh copy of its error (raising one object again would grow its traceback)."""
    if isinstance(cached, SieveError):
        raise SieveError(cached.file, cached.line, cached.message)
    return cached


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def run(
    scripts: Sequence[Script],
    message: bytes,
    envelope: SieveEnvelope,
    *,
    delimiter: str = "+",
    vacation_state: VacationState | None = None,
    now: float | None = None,
    work_limit: int = DEFAULT_WORK_LIMIT,
    settings: SieveSettings = DEFAULT_SETTINGS,
) -> Outcome:
    """Run ``scripts`` (sieve_before…, the user's, sieve_after…) for one recipient.

    As in Pigeonhole, ``stop`` ends only its own script, and the next script runs only while the message
    is still kept (implicit keep in force, or an explicit ``keep``): a ``fileinto``, ``redirect``,
    ``reject`` or ``discard`` in a before script means the user's script does not run.

    ``delimiter`` lists the subaddress separator characters (Dovecot's ``recipient_delimiter``).
    ``settings`` are the site's (spamtest, environment, global scripts); ``now`` is the clock of
    ``currentdate`` and of the vacation record. ``vacation_state`` is only read here; the caller records a
    sent reply with ``vacation_state.record(outcome.vacation)``. ``work_limit`` bounds the work of all the
    scripts together (:mod:`mda.sieve.budget`); spending it is a runtime error.
    """
    result = ResultBuilder()
    msg = SieveMessage(message, Meter(work_limit))
    ctx = Context(
        msg,
        envelope.sender,
        envelope.recipient,
        envelope.original_recipient,
        delimiter,
        result,
        msg.meter,
        now,
        settings,
        vacation_state,
    )
    try:
        flags = execute(scripts, ctx)
    except SieveRuntimeError as exc:
        # RFC 5228 §2.10.6 / Pigeonhole: a failed run delivers by the implicit keep alone.
        return Outcome((Keep(),), (exc.fault,))
    actions = result.final(flags)
    skipped: str | None = None
    if result.vacation is not None:
        try:
            reply, why = decide(
                result.vacation,
                msg,
                envelope.sender,
                envelope.recipient,
                envelope.original_recipient,
                vacation_state,
                time.time() if now is None else now,
            )
        except WorkLimitExceeded as exceeded:  # the address fields it checks are too costly to parse
            reply, why = None, str(exceeded)
        if reply is not None:
            actions.append(reply)
        else:
            skipped = why
    header = msg.header_block() if msg.edited else None
    return Outcome(tuple(actions), (), skipped, tuple(ctx.duplicates), header)
