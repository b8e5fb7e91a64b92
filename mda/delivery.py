"""Fan-out of one received message to every accepted recipient's mailboxes, and the replies.

LMTP (RFC 2033 §4.2): one outcome per accepted RCPT, in order; each recipient stages and commits on
its own, so one failing mailbox never fails the others. SMTP (RFC 5321 §3.3): one reply for all, so
every copy is staged first and committed only when all are staged; otherwise every staged copy is
undone and the single reply says why (docs/architecture.md). ``LMTP`` and ``SMTP`` are the two
``DeliveryContract``s (mda/contract.py) that pair each fan-out with its way of replying.

File work runs in a thread pool; the event loop only awaits it, shielded, so a client that hangs up
cannot leave a half-done delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from mda import filtering, replies
from mda.config import Config
from mda.contract import DeliveryContract, PerRecipientReplies, SingleReply
from mda.dataread import DataResult
from mda.dedupe import suppress_duplicates
from mda.enums import BareNewline, Protocol
from mda.policy import Resolution
from mda.replies import Reply, describe_error, reply_for_error
from mda.spool import Spool, SpoolTail
from mda.storage import stage
from mda.storage.base import Mailbox, MessageCopy, StagedCopy, StoreResult
from mda.storage.folders import NewFolderBudget
from mda.trace import count_received, delivered_to_addresses, trace_block
from mda.transaction import Outcome, Recipient, Transaction
from mda.workpool import WorkPool

__all__ = [
    "LMTP",
    "SMTP",
    "DeliveryContract",
    "Outcome",
    "Recipient",
    "Transaction",
    "contract_for",
    "deliver",
    "deliver_transaction",
    "failure_outcomes",
]

CopyKey = tuple[tuple[str, str, str | None], str, bytes | None]
"""One stored copy within a message: the mailbox's ``key``, the Maildir flags and the header section
Sieve's editheader made (None: not edited); stored once."""


@dataclass(frozen=True)
class LoopTrail:
    """What the loop checks read from the message's header section: read once per message, however
    many recipients are checked against it."""

    hops: int
    delivered_to: frozenset[str]

    @classmethod
    def of(cls, header_section: bytes) -> LoopTrail:
        return cls(count_received(header_section), frozenset(delivered_to_addresses(header_section)))


def content_refusal(
    config: Config, resolution: Resolution, data: DataResult, trail: LoopTrail
) -> tuple[Reply, str] | None:
    """A refusal of this copy that needs no disk: size, bare newlines, loops (RFC 5321 §6.3)."""
    if data.too_big:
        return replies.MESSAGE_TOO_BIG, f"message of more than {config.limits.max_message_size} bytes"
    if data.header_too_big:
        return replies.HEADER_TOO_BIG, "header section over the max_header_size limit"
    if data.bare_newlines and config.bare_newline == BareNewline.REJECT:
        return replies.BARE_NEWLINE, f"{data.bare_newlines} bare CR or LF in data"
    if trail.hops > config.max_hops:
        return replies.TOO_MANY_HOPS, f"{trail.hops} Received fields, limit {config.max_hops}"
    for address in (resolution.address, *resolution.final_addresses):
        if address.lower() in trail.delivered_to:
            return replies.LOOP_DETECTED, f"message already has Delivered-To: {address}"
    return None


def _copy_for(txn: Transaction, recipient: Recipient, spool: Spool) -> MessageCopy:
    header = trace_block(txn.trace, recipient.address, recipient.original)
    return MessageCopy(header=header, body=spool, envelope_sender=txn.sender)


def _stage(mailbox: Mailbox, copy: MessageCopy) -> StagedCopy:
    return stage(mailbox, copy)


def _target_copy(copy: MessageCopy, target: filtering.Target) -> MessageCopy:
    """The copy for one target: its flags, and Sieve's edited header section in front of the rest of
    the spool when editheader changed it (the body is never rewritten)."""
    if target.header is None:
        return copy if target.flags == copy.flags else replace(copy, flags=target.flags)
    spool = copy.body
    assert isinstance(spool, Spool)
    start = spool.header_length()
    assert start is not None  # filtering only keeps edits whose header section end is known
    return replace(copy, header=target.header, body=SpoolTail(spool, start), flags=target.flags)


def _copy_key(target: filtering.Target) -> CopyKey:
    return (target.mailbox.key, target.flags, target.header)


def _send_after_commit(
    config: Config,
    txn: Transaction,
    plan: filtering.Plan,
    recipient: str,
    copy: MessageCopy,
    source: filtering.MessageSource,
    record: Callable[[StoreResult], None],
) -> None:
    """Sieve's redirects and vacation replies, once the copies are committed; a redirect that cannot
    be sent is kept instead (``record`` receives that copy's result)."""
    filtering.send_after_commit(
        config,
        plan,
        queue_id=txn.queue_id,
        sender=txn.sender,
        recipient=recipient,
        header=copy.header,
        source=source,
        keep=lambda target: record(_stage(target.mailbox, _target_copy(copy, target)).commit()),
    )


def _worst(first: Reply | None, second: Reply) -> Reply:
    """Combine two failures of one recipient: a temporary one wins (the client will retry)."""
    if first is None:
        return second
    if second.is_temporary and not first.is_temporary:
        return second
    return first


def _sieve_plan(
    config: Config, txn: Transaction, recipient: Recipient, header: bytes, source: filtering.MessageSource
) -> filtering.Plan | None:
    """This recipient's Sieve decisions (mda/filtering.py), or None when no script applies."""
    return filtering.plan_recipient(
        config,
        queue_id=txn.queue_id,
        sender=txn.sender,
        recipient=recipient.address,
        original_recipient=recipient.original,
        mailboxes=recipient.resolution.mailboxes,
        header=header,
        source=source,
    )


def _targets(resolution: Resolution, plan: filtering.Plan | None, budget: NewFolderBudget) -> list[filtering.Target]:
    """Where this recipient's copies go; folders beyond the message's budget fall back to INBOX."""
    targets = plan.targets if plan is not None else [filtering.Target(m) for m in resolution.mailboxes]
    return [_admitted(target, budget) for target in targets]


def _admitted(target: filtering.Target, budget: NewFolderBudget) -> filtering.Target:
    mailbox = budget.admit(target.mailbox)
    return target if mailbox is target.mailbox else replace(target, mailbox=mailbox)


def _folder_budget(config: Config) -> NewFolderBudget:
    return NewFolderBudget(config.storage.max_new_folders)


def _deliver_one(
    config: Config,
    txn: Transaction,
    recipient: Recipient,
    spool: Spool,
    done: dict[CopyKey, StoreResult],
    source: filtering.MessageSource,
    budget: NewFolderBudget,
) -> Outcome:
    """Stage and commit every mailbox of one recipient (LMTP); ``done`` shares copies within the message."""
    outcome = Outcome(recipient, LMTP.saved(txn, recipient))
    copy = _copy_for(txn, recipient, spool)
    plan = _sieve_plan(config, txn, recipient, copy.header, source)
    if plan is not None:
        outcome.sieve_errors = plan.errors
        outcome.reason = plan.summary
        if plan.reject is not None:  # RFC 5429 §2.2: this recipient only is refused, in LMTP
            outcome.reply = plan.reject
            return outcome
    failure: Reply | None = None
    for target in _targets(recipient.resolution, plan, budget):
        key = _copy_key(target)
        if key in done:
            outcome.results.append(done[key])
            continue
        try:
            result = _stage(target.mailbox, _target_copy(copy, target)).commit()
        except Exception as error:  # every failure becomes this recipient's reply, never a crash
            failure = _worst(failure, reply_for_error(error))
            outcome.reason = describe_error(error)
            continue
        done[key] = result
        outcome.results.append(result)
    if plan is not None and failure is None:
        try:
            _send_after_commit(config, txn, plan, recipient.address, copy, source, outcome.results.append)
            outcome.reason = plan.summary
        except Exception as error:  # the fallback keep of a failed redirect failed: retry, never lose
            failure = reply_for_error(error)
            outcome.reason = describe_error(error)
    if failure is not None:
        outcome.reply = failure
    return outcome


def deliver_lmtp(config: Config, txn: Transaction, spool: Spool, data: DataResult) -> list[Outcome]:
    """One outcome per accepted RCPT in order; the same address twice is stored once (blocking)."""
    trail = LoopTrail.of(spool.header_section())
    outcomes: list[Outcome] = []
    by_key: dict[str, Outcome] = {}
    done: dict[CopyKey, StoreResult] = {}
    source = filtering.MessageSource(spool)
    budget = _folder_budget(config)
    for recipient in txn.recipients:
        key = recipient.key
        if key in by_key:  # the same copies and reply; this RCPT's own DSN parameters
            outcomes.append(replace(by_key[key], recipient=recipient))
            continue
        refusal = content_refusal(config, recipient.resolution, data, trail)
        if refusal is not None:
            outcome = Outcome(recipient, refusal[0], reason=refusal[1])
        else:
            outcome = _deliver_one(config, txn, recipient, spool, done, source, budget)
        by_key[key] = outcome
        outcomes.append(outcome)
    return outcomes


def _all(txn: Transaction, reply: Reply, reason: str) -> list[Outcome]:
    """SMTP's single reply, as the outcome of every accepted RCPT."""
    return [Outcome(r, reply, reason=reason) for r in txn.recipients]


def deliver_smtp(config: Config, txn: Transaction, spool: Spool, data: DataResult) -> list[Outcome]:
    """All or nothing: every copy staged, then all committed; else none is (blocking).

    Returns one outcome per recipient, all carrying the transaction's single reply.
    """
    trail = LoopTrail.of(spool.header_section())
    unique = list({r.key: r for r in txn.recipients}.values())
    refusals = [(r, content_refusal(config, r.resolution, data, trail)) for r in unique]
    failed = [(r, refusal) for r, refusal in refusals if refusal is not None]
    if failed:
        temporary = [refusal for _, refusal in failed if refusal[0].is_temporary]
        reply, reason = temporary[0] if temporary else failed[0][1]
        return _all(txn, reply, reason)

    # Sieve runs before anything is staged: a reject is a permanent failure of the whole transaction
    # (docs/architecture.md; LMTP refuses only that recipient).
    source = filtering.MessageSource(spool)
    copies = {r.key: _copy_for(txn, r, spool) for r in unique}
    plans = {r.key: _sieve_plan(config, txn, r, copies[r.key].header, source) for r in unique}

    def errors_of(recipient: Recipient) -> list[str]:
        plan = plans[recipient.key]
        return plan.errors if plan is not None else []

    for recipient in unique:
        plan = plans[recipient.key]
        if plan is not None and plan.reject is not None:
            return [Outcome(r, plan.reject, reason=plan.summary, sieve_errors=errors_of(r)) for r in txn.recipients]

    staged: list[tuple[Recipient, Mailbox, StagedCopy]] = []
    seen: set[CopyKey] = set()
    budget = _folder_budget(config)
    try:
        for recipient in unique:
            copy = copies[recipient.key]
            for target in _targets(recipient.resolution, plans[recipient.key], budget):
                key = _copy_key(target)
                if key in seen:
                    continue
                seen.add(key)
                staged.append((recipient, target.mailbox, _stage(target.mailbox, _target_copy(copy, target))))
    except Exception as error:
        for _, _, copy_staged in staged:
            copy_staged.abort()
        return _all(txn, reply_for_error(error), describe_error(error))

    results: dict[str, list[StoreResult]] = {}
    failure: tuple[Reply, str] | None = None
    for index, (recipient, _, copy_staged) in enumerate(staged):
        try:
            results.setdefault(recipient.key, []).append(copy_staged.commit())
        except Exception as error:
            # Copies already committed stay: a retry may duplicate them, but nothing is ever lost.
            for _, _, rest in staged[index + 1 :]:
                rest.abort()
            failure = (replies.LOCAL_ERROR, "commit failed: " + describe_error(error))
            break
    if failure is not None:
        return _all(txn, *failure)
    reasons: dict[str, str] = {}
    for recipient in unique:
        plan = plans[recipient.key]
        if plan is None:
            continue
        try:
            record = results.setdefault(recipient.key, []).append
            _send_after_commit(config, txn, plan, recipient.address, copies[recipient.key], source, record)
        except Exception as error:  # the fallback keep of a failed redirect failed: retry, never lose
            return _all(txn, replies.LOCAL_ERROR, describe_error(error))
        reasons[recipient.key] = plan.summary
    return [
        Outcome(r, SMTP.saved(txn, r), results.get(r.key, []), reasons.get(r.key, ""), errors_of(r))
        for r in txn.recipients
    ]


LMTP: DeliveryContract = PerRecipientReplies(Protocol.LMTP, deliver_lmtp)
"""Each recipient stored and answered on its own (RFC 2033 §4.2); also ``mda deliver``'s contract."""
SMTP: DeliveryContract = SingleReply(Protocol.SMTP, deliver_smtp)
"""All copies or none, one reply for the transaction (RFC 5321 §3.3)."""
_CONTRACTS = {contract.protocol: contract for contract in (LMTP, SMTP)}


def contract_for(protocol: Protocol) -> DeliveryContract:
    """The contract of a listener's ``protocol`` (LMTP or SMTP), chosen once per session."""
    return _CONTRACTS[protocol]


def deliver_transaction(
    config: Config, txn: Transaction, spool: Spool, data: DataResult, contract: DeliveryContract
) -> list[Outcome]:
    """Deliver one received transaction (blocking): the one path of the server and of ``mda deliver``.

    Duplicate suppression (``duplicate_window``, mda/dedupe.py) around the contract's fan-out, then the
    outcomes as the contract answers them (in SMTP, one reply shared by all).
    """
    return contract.settle(suppress_duplicates(contract)(config, txn, spool, data))


async def deliver(
    config: Config,
    txn: Transaction,
    spool: Spool,
    data: DataResult,
    contract: DeliveryContract,
    *,
    executor: Executor | None,
) -> Sequence[Outcome]:
    """Run ``deliver_transaction`` off the event loop; it completes even if the awaiting session is
    cancelled. The server's storage threads take it through ``WorkPool.call`` (mda/workpool.py): one
    loop wake-up per delivery."""
    loop = asyncio.get_running_loop()
    if not isinstance(executor, WorkPool):
        return await asyncio.shield(
            loop.run_in_executor(executor, deliver_transaction, config, txn, spool, data, contract)
        )
    job = executor.call(loop, deliver_transaction, config, txn, spool, data, contract)
    try:
        outcomes: list[Outcome] = await job.waiter
    except asyncio.CancelledError:
        # The client went away: let the copies finish (or be undone) before the spool closes.
        await job.wait_finished()
        raise
    return outcomes


def failure_outcomes(txn: Transaction, error: BaseException) -> list[Outcome]:
    """Outcomes when delivery itself raised: the error's reply (``451 4.3.0`` by default) for every
    recipient, through the one error table; the reason is logged."""
    reply = reply_for_error(error)
    return [Outcome(r, reply, reason=describe_error(error)) for r in txn.recipients]
