"""Sieve at delivery (RFC 5228): which scripts run for a mailbox, and what their actions become.

For every mailbox of an accepted recipient, the scripts are ``sieve.before`` (in order), the user's
active script (``users: {ADDR: {sieve: TEMPLATE}}`` or ``sieve.path``, rendered by policy into
``Mailbox.sieve``), then ``sieve.after``: Pigeonhole's ``sieve_before``/``sieve_after`` sequence, whose
rules live in :func:`mda.sieve.run`. A script file that does not exist is no script; a mailbox without
any script is delivered as if Sieve were off. Compiled scripts are cached until the file changes
(:func:`mda.sieve.compile_file`).

Actions become copies and replies, as Dovecot's LMTP with Pigeonhole does:

- ``keep`` stores in the mailbox policy resolved (INBOX, or the ``+detail`` folder), with imap4flags
  (RFC 5232) as Maildir flag letters, so a flagged copy lands in ``cur/`` with ``:2,FLAGS``;
- ``fileinto`` stores in that Maildir++ folder (hierarchy with ``.``, modified UTF-7 on disk). An unsafe
  name, an mbox mailbox, or a folder that is missing and may not be created (no ``:create``, RFC 5490
  §3.2, and no ``create_folders``) stores in INBOX instead, as Pigeonhole falls back to the implicit keep;
- ``discard`` stores nothing and the recipient is answered ``250`` (RFC 5228 §4.4);
- ``reject``/``ereject`` (RFC 5429 §2.1/§2.2) refuse the recipient with ``550 5.7.1 reason``;
- ``redirect`` and ``vacation`` are sent through ``submission`` after the local copies are committed;
  a redirect that cannot be sent stores the message in INBOX instead (never lost), a vacation reply
  that cannot be sent is logged and the sender will be answered by a later message.

A script that does not compile, or fails while running, never loses mail: the mailbox gets its
implicit keep, and a ``sieve_error`` log line names the file and line.

Messages over ``SIEVE_MESSAGE_LIMIT`` are shown to Sieve as their header section only, so memory stays
bounded whatever the message size: header tests work as usual, ``body`` tests see no body and ``size``
compares the size of what the script sees. Redirects always send the whole message.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mda import logs, outbound
from mda.config import Config
from mda.enums import StorageFormat
from mda.replies import Reply
from mda.sieve import (
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    Script,
    SieveEnvelope,
    SieveError,
    SieveSettings,
    Vacation,
    VacationState,
    build_reply,
    compile_file,
    run,
)
from mda.sieve.budget import DEFAULT_WORK_LIMIT
from mda.sieve.engine import MAX_SCRIPT_SIZE
from mda.sieve.ext_duplicate import Seen
from mda.sieve.ext_enotify import Notify, build_notification, is_automatic
from mda.sieve.message import SieveMessage
from mda.spool import Spool
from mda.state import state_dir
from mda.statestore import StateError, open_database
from mda.storage.base import Mailbox
from mda.storage.folders import folder_for_detail
from mda.storage.fsutil import is_below
from mda.storage.userfs import UnsafeUserFile, fs_identity, open_beneath_home

SIEVE_MESSAGE_LIMIT = 1024 * 1024
"""Above this many bytes Sieve sees the header section only (see the module docstring)."""
SUBMISSION_TIMEOUT = 10.0
"""Seconds a redirect or vacation reply may wait for the submission server: it delays this reply only."""
VACATION_DB = "vacation.sqlite"
"""Vacation replies sent, per (recipient, sender, handle), in ``state_dir`` (shared by worker processes)."""
MAX_REASON = 200
"""A reject reason goes into one reply line; RFC 5321 §4.5.3.1.5 allows 512 octets per reply line."""

IMAP_FLAG_LETTERS = {"\\draft": "D", "\\flagged": "F", "\\answered": "R", "\\seen": "S", "\\deleted": "T"}
"""imap4flags system flags (RFC 3501 §2.3.2) as Maildir info letters; keywords have no letter here."""

_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f]+")


def maildir_flags(flags: Sequence[str]) -> str:
    """Maildir ``:2,`` letters for IMAP flags, in ASCII order as Dovecot writes them."""
    return "".join(sorted({IMAP_FLAG_LETTERS[f.lower()] for f in flags if f.lower() in IMAP_FLAG_LETTERS}))


def reject_reply(reason: str) -> Reply:
    """``550 5.7.1`` with the script's reason on one ASCII line (RFC 5429 §2.2: ereject's SMTP reply)."""
    text = _UNSAFE_TEXT.sub(" ", reason).strip().encode("ascii", "replace").decode("ascii")
    return Reply(550, "5.7.1", text[:MAX_REASON] or "Message rejected")


class MessageSource:
    """The spool as Sieve reads it: read once per message, however many recipients run scripts."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._shown: bytes | None = None

    def shown(self) -> bytes:
        """What scripts see of the body part of the message (bounded by ``SIEVE_MESSAGE_LIMIT``)."""
        if self._shown is None:
            if self.spool.size <= SIEVE_MESSAGE_LIMIT:
                self._shown = self.spool.read_all()
            else:
                self._shown = self.spool.header_section() + b"\n"
        return self._shown

    def whole(self) -> bytes:
        return self.spool.read_all()

    def editable(self) -> bool:
        """Whether a header section edited by Sieve can replace the spooled one: its end is known."""
        return self.spool.header_length() is not None

    def rest(self) -> bytes:
        """What follows the spooled header section: the empty line and the body."""
        start = self.spool.header_length()
        assert start is not None
        return self.spool.read_all()[start:]


@dataclass(frozen=True)
class Target:
    """One copy to store: the mailbox (folder included) and its Maildir flag letters."""

    mailbox: Mailbox
    flags: str = ""
    header: bytes | None = None
    """The whole header section as Sieve's editheader left it (trace fields included), stored in front
    of the rest of the spooled message instead of the trace block; None: not edited."""


@dataclass
class Plan:
    """What the scripts of one recipient decided, turned into copies, sends and a reply."""

    targets: list[Target] = field(default_factory=list)
    reject: Reply | None = None
    redirects: list[tuple[str, Mailbox, bytes | None]] = field(default_factory=list)
    """(address, the mailbox whose script redirected, its edited header section or None): a failed
    send stores into that mailbox."""
    vacations: list[Vacation] = field(default_factory=list)
    duplicates: list[Seen] = field(default_factory=list)
    """IDs of ``duplicate`` tests (RFC 7352), recorded once the copies are committed."""
    notifications: list[Notify] = field(default_factory=list)
    """enotify (RFC 5435) mailto notifications, sent once the copies are committed."""
    errors: list[str] = field(default_factory=list)
    """Kinds of failures for the ``mda_sieve_errors_total`` counter: compile, runtime, redirect, vacation."""
    notes: list[str] = field(default_factory=list)
    """One line per decision, for the delivery log's reason and ``mda resolve --message``."""

    @property
    def summary(self) -> str:
        return "sieve: " + "; ".join(self.notes) if self.notes else ""


def _candidates(config: Config, mailbox: Mailbox) -> tuple[Path, ...]:
    """The script files that may run for ``mailbox``, in run order: before, the user's, after."""
    before = config.sieve.before if config.sieve else ()
    after = config.sieve.after if config.sieve else ()
    user = (mailbox.sieve,) if mailbox.sieve is not None else ()
    return (*before, *user, *after)


_NO_SCRIPT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP})
"""Errors that mean "no script file here" (what ``Path.is_file`` answers False for)."""


def _compile_if_present(path: Path, mailbox: Mailbox, global_dir: Path | None = None) -> Script | None:
    """The compiled script, or None when no file is there: one ``open`` and ``fstat`` when cached.

    The user's own script (``Mailbox.sieve``) inside their home is reached only through symlinks that
    stay inside the home (Dovecot ManageSieve's ``~/.dovecot.sieve`` -> ``sieve/NAME.sieve``) and must
    be a regular file with one link. A system user's (``Mailbox.system_user``) is read with their
    file-system identity and must be theirs; a virtual user's home is the directory above the mailbox,
    the default ``{home}``. Anything else is refused like a script that does not compile (README,
    "Local users" and "Sieve"). Scripts it includes (RFC 6609) are looked for beside it and in
    ``global_dir``.
    """
    opener = None
    own = path == mailbox.sieve
    user = mailbox.system_user if own else None
    home = mailbox.root if user is not None else mailbox.path.parent
    if own and home is not None and is_below(path, home):
        uid = user[0] if user is not None else None

        def opener(script: Path) -> tuple[int, os.stat_result]:
            try:
                return open_beneath_home(home, script, uid, max_size=MAX_SCRIPT_SIZE)
            except OSError:
                if script.is_dir():  # a directory where the script may be is no script, as for every script
                    raise IsADirectoryError(errno.EISDIR, "is a directory", str(script)) from None
                raise

    else:
        user = None
    try:
        if user is None:  # a virtual user's or a site script: no identity to take
            return compile_file(path, global_dir, opener=opener)
        with fs_identity(user):
            return compile_file(path, global_dir, opener=opener)
    except UnsafeUserFile as error:
        raise SieveError(str(path), 0, f"script refused: {error.why}") from None
    except OSError as error:
        if error.errno in _NO_SCRIPT:
            return None
        if user is not None:  # the user's own doing (chmod 000): their script only, never a 451 for all
            raise SieveError(str(path), 0, f"script refused: {error.strerror}") from None
        raise


def compile_scripts(config: Config, mailbox: Mailbox) -> tuple[list[Path], list[Script], SieveError | None]:
    """The scripts present for ``mailbox`` and their files, or the first compile error (which disables
    the whole sequence; the files list then ends with the broken one)."""
    paths: list[Path] = []
    scripts: list[Script] = []
    global_dir = _global_dir(config)
    for path in _candidates(config, mailbox):
        try:
            script = _compile_if_present(path, mailbox, global_dir)
        except SieveError as error:
            return [*paths, path], [], error
        if script is not None:
            paths.append(path)
            scripts.append(script)
    return paths, scripts, None


def _log_state_error(queue_id: str, action: str, error: str) -> None:
    logs.event("state_error", logging.WARNING, queue_id=queue_id, record="vacation", action=action, error=error)


def _log_error(queue_id: str, recipient: str, kind: str, file: str, line: int, message: str) -> None:
    logs.event(
        "sieve_error",
        logging.WARNING,
        queue_id=queue_id,
        recipient=recipient,
        kind=kind,
        file=file,
        line=line,
        message=message,
    )


def plan_recipient(
    config: Config,
    *,
    queue_id: str,
    sender: str,
    recipient: str,
    original_recipient: str | None,
    mailboxes: Sequence[Mailbox],
    header: bytes,
    source: MessageSource,
    now: float | None = None,
    dry_run: bool = False,
) -> Plan | None:
    """Run the scripts of every mailbox of one recipient; None when none of them has a script.

    ``header`` is the trace block stored in front of this recipient's copy: scripts see the message as
    it will be stored (Pigeonhole also sees Dovecot's Return-Path and Delivered-To). The recipient is
    refused only when every mailbox's script rejects; otherwise rejecting mailboxes store nothing.
    ``dry_run`` (``mda resolve --message``) creates no state file.
    """
    if config.sieve is None and all(m.sieve is None for m in mailboxes):
        return None
    plan = Plan()
    found = False
    rejects: list[Reply] = []
    for mailbox in mailboxes:
        paths, scripts, error = compile_scripts(config, mailbox)
        if not paths:
            plan.targets.append(Target(mailbox))
            continue
        found = True
        if error is not None:
            _log_error(queue_id, recipient, "compile", error.file, error.line, error.message)
            plan.errors.append("compile")
            plan.notes.append(f"error {error}; keep")
            plan.targets.append(Target(mailbox))
            continue
        envelope = SieveEnvelope(sender, recipient, original_recipient)
        try:
            try:
                vacation_state = _vacation_state(config, scripts, create=not dry_run)
            except StateError as error:  # no record: no vacation reply, duplicate tests see nothing
                _log_state_error(queue_id, "open", str(error))
                plan.errors.append("vacation")
                vacation_state = None
            outcome = run(
                scripts,
                header + source.shown(),
                envelope,
                delimiter=config.recipient_delimiter,
                vacation_state=vacation_state,
                now=now,
                settings=_settings(config),
                work_limit=config.sieve.work_limit if config.sieve else DEFAULT_WORK_LIMIT,
            )
        except Exception as failure:  # an engine or state-file failure must not lose the message
            _log_error(queue_id, recipient, "runtime", paths[-1].as_posix(), 0, f"{type(failure).__name__}: {failure}")
            plan.errors.append("runtime")
            plan.notes.append("internal error; keep")
            plan.targets.append(Target(mailbox))
            continue
        for fault in outcome.errors:
            _log_error(queue_id, recipient, "runtime", fault.file, fault.line, fault.message)
            plan.errors.append("runtime")
            plan.notes.append(f"runtime error {fault}; keep")
        plan.duplicates.extend(outcome.duplicates)
        for state_failure in vacation_state.failures if vacation_state is not None else ():
            _log_state_error(queue_id, "read", state_failure)
            plan.errors.append("vacation")
        if outcome.vacation_skipped:
            plan.notes.append(f"no vacation reply: {outcome.vacation_skipped}")
        edited = outcome.header if outcome.header is not None and source.editable() else None
        if outcome.header is not None and edited is None:
            plan.notes.append("header edits not stored: header section too large")
        rejected = apply_actions(config, plan, mailbox, outcome.actions, edited)
        if rejected is not None:
            rejects.append(rejected)
    if not found:
        return None
    if rejects and len(rejects) == len(mailboxes):
        plan.reject = rejects[0]
    _merge_targets(plan)
    return plan


def _global_dir(config: Config) -> Path | None:
    """``sieve.global_dir``: where ``include :global`` looks (RFC 6609)."""
    settings = config.sieve.settings if config.sieve is not None else None
    return settings.global_dir if settings is not None else None


_settings_cache: dict[int, tuple[Config, SieveSettings]] = {}


def _settings(config: Config) -> SieveSettings:
    """The configured Sieve settings, with the ``environment`` items that come from the host name;
    built once per configuration (a reload makes a new one)."""
    cached = _settings_cache.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    configured = config.sieve.settings if config.sieve is not None else None
    base = configured if configured is not None else SieveSettings()
    domain = config.hostname.partition(".")[2] or config.hostname
    settings = replace(base, environment={"host": config.hostname, "domain": domain})
    _settings_cache.clear()  # only the configuration in use is kept
    _settings_cache[id(config)] = (config, settings)
    return settings


def _vacation_state(config: Config, scripts: Sequence[Script], *, create: bool = True) -> VacationState | None:
    """The reply and duplicate record, opened only for scripts that use it."""
    if not any("vacation" in s.extensions or "duplicate" in s.extensions for s in scripts):
        return None
    directory = state_dir(config)
    if not create and not config.state.shared and not (directory / VACATION_DB).is_file():
        return None  # a dry run (mda resolve --message) reads the record if there is one, creates nothing
    return VacationState(open_database(config.state, directory, VACATION_DB, read_only=not create))


@dataclass(slots=True)
class _Applying:
    """One mailbox's actions being turned into ``plan``: where they come from and what they store
    (not frozen, which would set each field through ``object.__setattr__`` for every delivery)."""

    config: Config
    plan: Plan
    mailbox: Mailbox
    header: bytes | None
    """The edited header section (editheader), for its stores and redirects."""


def _keep(at: _Applying, action: Keep) -> None:
    at.plan.targets.append(Target(at.mailbox, maildir_flags(action.flags), at.header))
    at.plan.notes.append("keep" + (f" flags {' '.join(action.flags)}" if action.flags else ""))


def _file_into(at: _Applying, action: FileInto) -> None:
    target, note = _fileinto(at.mailbox, action)
    at.plan.targets.append(replace(target, header=at.header))
    at.plan.notes.append(note)


def _discard(at: _Applying, action: Discard) -> None:
    at.plan.notes.append("discard")


def _redirect(at: _Applying, action: Redirect) -> None:
    if at.config.submission is None:
        at.plan.errors.append("redirect")
        at.plan.notes.append(f"redirect to {action.address} impossible without submission; keep")
        at.plan.targets.append(Target(at.mailbox))
    else:
        at.plan.redirects.append((action.address, at.mailbox, at.header))
        at.plan.notes.append(f"redirect to {action.address}" + (" (copy)" if action.copy else ""))


def _reject(at: _Applying, action: Reject) -> Reply:
    rejected = reject_reply(action.reason)
    at.plan.notes.append(("ereject" if action.ereject else "reject") + f": {rejected.text}")
    return rejected


def _notify(at: _Applying, action: Notify) -> None:
    if at.config.submission is None:
        at.plan.notes.append("no notification: no submission configured")
    elif action.recipients:
        at.plan.notifications.append(action)
        at.plan.notes.append(f"notify {', '.join(action.recipients)}")


def _vacation(at: _Applying, action: Vacation) -> None:
    if at.config.submission is None:
        at.plan.notes.append(f"no vacation reply to {action.to}: no submission configured")
    else:
        at.plan.vacations.append(action)
        at.plan.notes.append(f"vacation reply to {action.to}")


ACTION_HANDLERS: dict[type[object], Callable[[_Applying, Any], Reply | None]] = {
    Keep: _keep,
    FileInto: _file_into,
    Discard: _discard,
    Redirect: _redirect,
    Reject: _reject,
    Notify: _notify,
    Vacation: _vacation,
}
"""What each kind of Sieve action (``mda.sieve.Action``) becomes at delivery; a reject returns its reply."""


class UnknownAction(TypeError):
    """A Sieve action with no entry in ``ACTION_HANDLERS``: a programming error. Ignoring it could drop
    mail (the action cancelled the implicit keep), so the delivery fails with ``451`` and is retried."""


def apply_actions(
    config: Config, plan: Plan, mailbox: Mailbox, actions: Sequence[object], header: bytes | None = None
) -> Reply | None:
    """Turn one mailbox's actions into targets, sends and notes; returns its reject reply, if any.
    ``header`` is the edited header section (editheader), for its stores and redirects. Raises
    :class:`UnknownAction` for an action it has no handler for."""
    at = _Applying(config, plan, mailbox, header)
    rejected: Reply | None = None
    for action in actions:
        handler = ACTION_HANDLERS.get(type(action))
        if handler is None:
            raise UnknownAction(f"no delivery handler for the Sieve action {type(action).__name__}")
        rejected = handler(at, action) or rejected
    return rejected


def _fileinto(mailbox: Mailbox, action: FileInto) -> tuple[Target, str]:
    """The folder's target, or INBOX when the name is unsafe or the folder cannot be used."""
    flags = maildir_flags(action.flags)
    inbox = Target(replace(mailbox, folder=None), flags)
    if action.folder.upper() == "INBOX":
        return inbox, "fileinto INBOX"
    if mailbox.format != StorageFormat.MAILDIR:
        return inbox, f"fileinto {action.folder!r}: folders need Maildir; INBOX"
    folder = folder_for_detail(action.folder)
    if folder is None:
        return inbox, f"fileinto {action.folder!r}: unsafe folder name; INBOX"
    create = action.create or mailbox.create_folder
    if not create and not (mailbox.path / f".{folder}").is_dir():
        # Pigeonhole: fileinto a missing folder without :create fails, and the implicit keep stores it.
        return inbox, f"fileinto {action.folder!r}: no such folder; INBOX"
    target = replace(mailbox, folder=folder, create_folder=create)
    return Target(target, flags), f"fileinto {action.folder!r}"


def _merge_targets(plan: Plan) -> None:
    """One copy per place (RFC 5228 §4.1: the same mailbox twice is one delivery); flags add up."""
    merged: dict[tuple[str, str, str | None], Target] = {}
    for target in plan.targets:
        previous = merged.get(target.mailbox.key)
        if previous is not None:
            flags = "".join(sorted(set(previous.flags) | set(target.flags)))
            create = previous.mailbox.create_folder or target.mailbox.create_folder
            target = Target(replace(previous.mailbox, create_folder=create), flags, previous.header)
        merged[target.mailbox.key] = target
    plan.targets = list(merged.values())


def send_after_commit(
    config: Config,
    plan: Plan,
    *,
    queue_id: str,
    sender: str,
    recipient: str,
    header: bytes,
    source: MessageSource,
    keep: Callable[[Target], None],
    timeout: float = SUBMISSION_TIMEOUT,
) -> None:
    """Record ``duplicate`` IDs, send redirects (from the original sender) and vacation replies (from
    ``<>``, RFC 3834 §3.3).

    Runs after this recipient's copies are committed, in the delivery's worker thread. ``keep`` stores
    the message into a mailbox whose redirect failed (it raises if that store fails too).
    """
    if plan.duplicates:
        try:
            _record_state(config).record_duplicates(recipient, plan.duplicates)
        except Exception as error:  # the copies are stored: a lost record only means a later duplicate passes
            _log_error(queue_id, recipient, "duplicate", "", 0, f"duplicate record: {error}")
            plan.errors.append("duplicate")
    submission = config.submission
    if submission is None:
        return
    if plan.redirects:
        for address, mailbox, edited in plan.redirects:
            message = header + source.whole() if edited is None else edited + source.rest()
            try:
                outbound.send(submission, sender, [address], message, timeout=timeout)
            except outbound.SubmissionError as error:
                _log_error(queue_id, recipient, "redirect", "", 0, f"redirect to {address}: {error}")
                plan.errors.append("redirect")
                if not any(t.mailbox.key == mailbox.key for t in plan.targets):
                    keep(Target(mailbox, header=edited))
                    plan.targets.append(Target(mailbox, header=edited))
                plan.notes.append(f"redirect to {address} failed; keep")
    if plan.notifications:
        _send_notifications(config, plan, queue_id, sender, recipient, header + source.shown(), timeout)
    for reply in plan.vacations:
        # Claim the record first: of several deliveries (several instances) only one sends the reply.
        try:
            state = _record_state(config)
            claimed = state.claim(reply)
        except StateError as error:  # no record, no reply: never two replies
            _log_state_error(queue_id, "claim", str(error))
            plan.errors.append("vacation")
            plan.notes.append(f"no vacation reply to {reply.to}: reply record unavailable")
            continue
        if claimed is None:
            plan.notes.append(f"no vacation reply to {reply.to}: already answered (RFC 5230 §4.2)")
            continue
        try:
            outbound.send(submission, "", [reply.to], build_reply(reply, hostname=config.hostname), timeout=timeout)
        except outbound.SubmissionError as error:
            _log_error(queue_id, recipient, "vacation", "", 0, f"vacation reply to {reply.to}: {error}")
            plan.errors.append("vacation")
            try:
                state.release(reply, claimed)
            except StateError as release_error:  # the claim expires with its period
                _log_state_error(queue_id, "release", str(release_error))


def _record_state(config: Config) -> VacationState:
    """The vacation and duplicate record where ``state:`` keeps it, for writing."""
    return VacationState(open_database(config.state, state_dir(config), VACATION_DB))


def _send_notifications(
    config: Config, plan: Plan, queue_id: str, sender: str, recipient: str, message: bytes, timeout: float
) -> None:
    """enotify's mailto notifications from the null sender; none about an automatic message."""
    submission = config.submission
    assert submission is not None
    seen = SieveMessage(message)
    if is_automatic(seen):
        plan.notes.append("no notification about an Auto-Submitted message (RFC 5436)")
        return
    for notify in plan.notifications:
        data = build_notification(notify, message=seen, sender=sender, recipient=recipient, hostname=config.hostname)
        try:
            outbound.send(submission, "", list(notify.recipients), data, timeout=timeout)
        except outbound.SubmissionError as error:
            _log_error(queue_id, recipient, "notify", "", 0, f"notification to {', '.join(notify.recipients)}: {error}")
            plan.errors.append("notify")


def check_scripts(config: Config, mailboxes: Sequence[Mailbox]) -> list[tuple[Path, SieveError | None]]:
    """``mda sieve-check``: every script that would run for these mailboxes, compiled, with its error."""
    checked: dict[Path, SieveError | None] = {}
    global_dir = _global_dir(config)
    for mailbox in mailboxes:
        for path in _candidates(config, mailbox):
            if path in checked:
                continue
            try:
                if _compile_if_present(path, mailbox, global_dir) is not None:
                    checked[path] = None
            except SieveError as error:
                checked[path] = error
    return list(checked.items())


def explain(config: Config, recipient: str, mailboxes: Sequence[Mailbox], message: bytes, sender: str) -> list[str]:
    """``mda resolve --message``: the Sieve decisions for ``message`` as delivered to ``recipient``.

    Nothing is stored or sent and no state file is created; the trace header block is left out, so a
    script testing ``Delivered-To`` sees what the message itself carries.
    """
    with Spool() as spool:
        spool.write(message.replace(b"\r\n", b"\n"))
        plan = plan_recipient(
            config,
            queue_id="-",
            sender=sender,
            recipient=recipient,
            original_recipient=None,
            mailboxes=mailboxes,
            header=b"",
            source=MessageSource(spool),
            dry_run=True,
        )
    if plan is None:
        return ["sieve: no script for this recipient (stored as without Sieve)"]
    lines = [f"sieve: {note}" for note in plan.notes]
    if plan.reject is not None:
        lines.append(f"sieve: recipient refused with {plan.reject}")
    for target in plan.targets:
        where = f" folder .{target.mailbox.folder}" if target.mailbox.folder else " (INBOX)"
        flags = f" flags :2,{target.flags}" if target.flags else ""
        lines.append(f"sieve: store {target.mailbox.format} {target.mailbox.path}{where}{flags}")
    if not plan.targets and plan.reject is None:
        lines.append("sieve: nothing stored here")
    return lines
