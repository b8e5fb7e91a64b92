"""Actions a Sieve run decides on, and the rules for combining them (RFC 5228 §2.10, §4).

:class:`ResultBuilder` applies Pigeonhole's rules while actions are added: a second ``fileinto`` to the
same folder (or ``keep`` twice) is one action, redirects to the same address are one, ``reject`` excludes
delivering actions and ``vacation``, and ``reject``/``vacation`` may each happen once. A broken rule
raises :class:`SieveRuntimeError`, after which the caller falls back to the implicit keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SieveRuntimeError
from .ext_enotify import Notify

#: Pigeonhole's default ``sieve_max_redirects``.
MAX_REDIRECTS = 4
#: Pigeonhole's default ``sieve_max_actions``.
MAX_ACTIONS = 32
DEFAULT_MAILBOX = "INBOX"


@dataclass(frozen=True, slots=True)
class Keep:
    """Store into the default mailbox with these IMAP flags (RFC 5228 §4.3, RFC 5232 §5)."""

    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileInto:
    """Store into ``folder`` (RFC 5228 §4.1); ``create`` asks to create it if missing (RFC 5490 §3.2)."""

    folder: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass(frozen=True, slots=True)
class Discard:
    """Nothing stores the message (RFC 5228 §4.4); only listed when no other action delivers it."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Forward to ``address`` (RFC 5228 §4.2); with ``copy`` the implicit keep stays (RFC 3894)."""

    address: str
    copy: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message (RFC 5429). ``ereject`` asks for a protocol-level refusal (LMTP/SMTP 5xx)
    where possible; otherwise, as for ``reject``, the caller sends a bounce (an MDN) to the sender."""

    reason: str
    ereject: bool = False


@dataclass(frozen=True, slots=True)
class Vacation:
    """A vacation reply the decision rules allow (RFC 5230 §4.5, RFC 3834).

    The caller sends :func:`mda.sieve.vacation.build_reply` with the null sender (RFC 3834 §3.3) after
    the message was delivered, then calls ``VacationState.record`` so that ``sender`` is not answered
    again for ``period`` seconds.
    """

    recipient: str  # whose vacation this is; the key of the reply state
    to: str  # the envelope sender, who gets the reply
    from_: str
    subject: str
    reason: str
    mime: bool
    handle: str
    period: int  # seconds
    in_reply_to: str | None = None


Action = Keep | FileInto | Discard | Redirect | Reject | Vacation | Notify


@dataclass(frozen=True, slots=True)
class PendingVacation:
    """The ``vacation`` command as run, before the decision rules of :mod:`mda.sieve.vacation`."""

    reason: str
    subject: str | None
    from_: str | None
    addresses: tuple[str, ...]
    mime: bool
    handle: str
    seconds: int  # the period asked for, before the limits of mda.sieve.vacation apply
    line: int


@dataclass
class ResultBuilder:
    """Collects actions across the scripts of one delivery."""

    stores: dict[str, Keep | FileInto] = field(default_factory=dict)
    redirects: dict[str, Redirect] = field(default_factory=dict)
    reject: Reject | None = None
    vacation: PendingVacation | None = None
    discarded: bool = False
    implicit_keep: bool = True
    lines: dict[str, int] = field(default_factory=dict)
    count: int = 0
    #: Whether the script running now stored into the default mailbox with an explicit ``keep``.
    script_kept: bool = False
    notifications: list[Notify] = field(default_factory=list)

    def begin_script(self) -> None:
        self.script_kept = False
        self.implicit_keep = True

    def still_kept(self) -> bool:
        """Pigeonhole runs the next script of a sequence only if this one kept the message."""
        return self.implicit_keep or self.script_kept

    def _count(self, file: str, line: int) -> None:
        self.count += 1
        if self.count > MAX_ACTIONS:
            raise SieveRuntimeError(file, line, f"more than {MAX_ACTIONS} actions")

    def store(self, action: Keep | FileInto, copy: bool, file: str, line: int) -> None:
        self._count(file, line)
        if self.reject is not None:
            raise SieveRuntimeError(
                file, line, f"store action conflicts with the reject action at line {self.lines['reject']}"
            )
        folder = DEFAULT_MAILBOX if isinstance(action, Keep) else action.folder
        key = DEFAULT_MAILBOX if folder.upper() == DEFAULT_MAILBOX else folder
        previous = self.stores.get(key)
        if previous is not None:
            # RFC 5228 §4.1: the same folder twice is one delivery; flags and :create accumulate.
            flags = _merge_flags(previous.flags, action.flags)
            if isinstance(previous, FileInto):
                create = previous.create or (isinstance(action, FileInto) and action.create)
                action = FileInto(previous.folder, flags, create)
            else:
                action = Keep(flags)
        self.stores[key] = action
        self.lines.setdefault("store", line)
        if key == DEFAULT_MAILBOX:
            self.script_kept = True
        if not copy:
            self.implicit_keep = False

    def redirect(self, address: str, copy: bool, file: str, line: int) -> None:
        self._count(file, line)
        if self.reject is not None:
            raise SieveRuntimeError(
                file, line, f"redirect action conflicts with the reject action at line {self.lines['reject']}"
            )
        key = address.lower()
        previous = self.redirects.get(key)
        if previous is not None:
            copy = copy and previous.copy
        elif len(self.redirects) >= MAX_REDIRECTS:
            raise SieveRuntimeError(file, line, f"more than {MAX_REDIRECTS} redirect actions")
        self.redirects[key] = Redirect(previous.address if previous else address, copy)
        self.lines.setdefault("redirect", line)
        if not copy:
            self.implicit_keep = False

    def add_reject(self, action: Reject, file: str, line: int) -> None:
        self._count(file, line)
        if self.reject is not None:
            first = self.lines["reject"]
            raise SieveRuntimeError(file, line, f"duplicate reject action (first at line {first})")
        # RFC 5429 §2.1 and Pigeonhole: reject excludes every action that delivers the message.
        for other in ("store", "redirect"):
            if other in self.lines:
                raise SieveRuntimeError(
                    file, line, f"reject action conflicts with the {other} action at line {self.lines[other]}"
                )
        if self.vacation is not None:
            raise SieveRuntimeError(
                file, line, f"reject action conflicts with the vacation action at line {self.vacation.line}"
            )
        self.reject = action
        self.lines["reject"] = line
        self.implicit_keep = False

    def add_vacation(self, action: PendingVacation, file: str, line: int) -> None:
        self._count(file, line)
        if self.vacation is not None:
            first = self.vacation.line
            raise SieveRuntimeError(file, line, f"duplicate vacation action (first at line {first})")
        if self.reject is not None:
            # RFC 5230 §4.7: vacation and reject both answer the sender.
            raise SieveRuntimeError(
                file, line, f"vacation action conflicts with the reject action at line {self.lines['reject']}"
            )
        self.vacation = action

    def add_notify(self, action: Notify, file: str, line: int) -> None:
        """enotify (RFC 5435): the same notification twice is sent once."""
        self._count(file, line)
        if action not in self.notifications:
            self.notifications.append(action)

    def discard(self) -> None:
        self.discarded = True
        self.implicit_keep = False

    def final(self, implicit_flags: tuple[str, ...]) -> list[Action]:
        """Actions in a stable order: stores, redirects, reject, discard, notifications; vacation is
        decided apart."""
        actions: list[Action] = []
        stores = dict(self.stores)
        if self.implicit_keep:
            # An explicit keep of an earlier script and this implicit keep are one store (Pigeonhole
            # stores the message once, with the flags of both).
            previous = stores.get(DEFAULT_MAILBOX)
            if previous is None:
                stores[DEFAULT_MAILBOX] = Keep(implicit_flags) if implicit_flags else _KEEP
            elif isinstance(previous, Keep):
                stores[DEFAULT_MAILBOX] = Keep(_merge_flags(previous.flags, implicit_flags))
            else:
                flags = _merge_flags(previous.flags, implicit_flags)
                stores[DEFAULT_MAILBOX] = FileInto(previous.folder, flags, previous.create)
        actions.extend(stores.values())
        actions.extend(self.redirects.values())
        if self.reject is not None:
            actions.append(self.reject)
        if self.discarded and not stores and not self.redirects:
            actions.append(Discard())
        actions.extend(self.notifications)
        return actions


_KEEP = Keep()
"""The implicit keep without flags, the usual outcome: one frozen object for every delivery."""


def _merge_flags(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    seen = {f.lower() for f in old}
    return old + tuple(f for f in new if f.lower() not in seen)
