"""Vacation: the reply rules of RFC 5230 §4.5 / RFC 3834, the reply state, and the reply message."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from pathlib import Path

import pytest

from mda.sieve import Keep, Outcome, SieveEnvelope, Vacation, VacationState, build_reply, compile_text, run

NOW = 1_800_000_000.0
DAY = 86400
ALICE = "alice@example.test"
SCRIPT = compile_text('require "vacation";\nvacation :days 2 "I am away until Monday.";\n', "vacation.sieve")


def message(extra: str = "", to: str = f"Alice <{ALICE}>", subject: str = "Lunch?") -> bytes:
    return (
        f"From: Bob <bob@example.org>\nTo: {to}\nSubject: {subject}\nMessage-ID: <q1@example.org>\n{extra}"
        "\nAre you free?\n"
    ).encode()


def vacation_run(
    msg: bytes = b"", sender: str = "bob@example.org", state: VacationState | None = None, now: float = NOW
) -> Outcome:
    return run([SCRIPT], msg or message(), SieveEnvelope(sender, ALICE), vacation_state=state, now=now)


def test_reply_is_listed_with_its_details() -> None:
    outcome = vacation_run()
    assert outcome.vacation == Vacation(
        recipient=ALICE,
        to="bob@example.org",
        from_=ALICE,
        subject="Auto: Lunch?",
        reason="I am away until Monday.",
        mime=False,
        handle="I am away until Monday.<default-subject><default-from><NO-MIME>",
        period=2 * DAY,
        in_reply_to="<q1@example.org>",
    )
    assert Keep() in outcome.actions


@pytest.mark.parametrize(
    ("sender", "extra", "why"),
    [
        ("", "", "null sender"),
        ("MAILER-DAEMON@example.org", "", "system address"),
        ("owner-dev@lists.example.org", "", "system address"),
        ("dev-request@lists.example.org", "", "system address"),
        ("LISTSERV@example.org", "", "system address"),
        (ALICE, "", "sender is the recipient"),
        ("bob@example.org", "Auto-Submitted: auto-generated\n", "Auto-Submitted"),
        ("bob@example.org", "Auto-Submitted: auto-replied; owner-email=x\n", "Auto-Submitted"),
        ("bob@example.org", "Precedence: bulk\n", "Precedence"),
        ("bob@example.org", "Precedence: list\n", "Precedence"),
        ("bob@example.org", "Precedence: junk\n", "Precedence"),
        ("bob@example.org", "List-Id: <dev.lists.example.org>\n", "mailing list"),
        ("bob@example.org", "List-Unsubscribe: <mailto:u@example.org>\n", "mailing list"),
    ],
)
def test_no_reply_to_automatic_or_list_mail(sender: str, extra: str, why: str) -> None:
    outcome = vacation_run(message(extra), sender=sender)
    assert outcome.vacation is None
    assert outcome.vacation_skipped is not None
    assert why in outcome.vacation_skipped
    assert outcome.actions == (Keep(),)


def test_auto_submitted_no_is_answered() -> None:
    assert vacation_run(message("Auto-Submitted: no\n")).vacation is not None


def test_only_when_the_recipient_is_addressed() -> None:
    assert vacation_run(message(to="team@example.test")).vacation is None
    for field in ("Cc", "Bcc", "Resent-To", "Resent-Cc"):
        msg = message(f"{field}: {ALICE.upper()}\n", to="team@example.test")
        assert vacation_run(msg).vacation is not None, field


def test_addresses_extend_the_recipient_and_become_the_from() -> None:
    script = compile_text('require "vacation";\nvacation :addresses "alias@example.test" "away";\n', "v")
    msg = message(to="Alias <alias@example.test>")
    reply = run([script], msg, SieveEnvelope("bob@example.org", ALICE), now=NOW).vacation
    assert reply is not None
    assert reply.from_ == "alias@example.test"


def test_days_are_clamped_to_the_allowed_period() -> None:
    for days, period in (("0", DAY), ("1", DAY), ("365", 60 * DAY)):
        script = compile_text(f'require "vacation";\nvacation :days {days} "away";\n', "v")
        reply = run([script], message(), SieveEnvelope("bob@example.org", ALICE), now=NOW).vacation
        assert reply is not None
        assert reply.period == period


def test_once_per_sender_per_period_and_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "vacation.sqlite"
    state = VacationState(path)
    first = vacation_run(state=state)
    assert first.vacation is not None
    # Nothing is recorded until the caller says the reply went out.
    assert vacation_run(state=state).vacation is not None
    state.record(first.vacation, now=NOW)
    reopened = VacationState(path)
    again = vacation_run(state=reopened, now=NOW + DAY)
    assert again.vacation is None
    assert again.vacation_skipped is not None
    assert "already answered" in again.vacation_skipped
    assert vacation_run(state=reopened, sender="carol@example.org", now=NOW + DAY).vacation is not None
    assert vacation_run(state=reopened, now=NOW + 2 * DAY + 1).vacation is not None


def test_handles_keep_separate_records(tmp_path: Path) -> None:
    state = VacationState(tmp_path / "v.sqlite")
    first = vacation_run(state=state)
    assert first.vacation is not None
    state.record(first.vacation, now=NOW)
    other = compile_text('require "vacation";\nvacation :handle "conference" "At a conference.";\n', "v")
    outcome = run([other], message(), SieveEnvelope("bob@example.org", ALICE), vacation_state=state, now=NOW)
    assert outcome.vacation is not None


def test_reply_message_follows_rfc_3834() -> None:
    reply = vacation_run(message(subject="=?utf-8?Q?Gr=C3=BC=C3=9Fe?=")).vacation
    assert reply is not None
    raw = build_reply(reply, now=NOW, hostname="mx.example.test")
    assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied (vacation)"
    assert parsed["To"] == "bob@example.org"
    assert parsed["From"] == ALICE
    assert parsed["Subject"] == "Auto: Grüße"
    assert parsed["In-Reply-To"] == "<q1@example.org>"
    assert parsed["References"] == "<q1@example.org>"
    assert parsed.get_content().strip() == "I am away until Monday."


def test_reply_headers_cannot_be_injected() -> None:
    reply = vacation_run().vacation
    assert reply is not None
    hostile = dataclasses.replace(reply, subject="Hi\r\nBcc: victim@example.net", from_="x@example.test\nX: y")
    raw = build_reply(hostile, now=NOW)
    assert b"\nBcc:" not in raw
    assert b"\nX: y" not in raw


def test_reply_headers_hold_no_unicode_line_breaks() -> None:
    reply = vacation_run().vacation
    assert reply is not None
    for separator in ("\u2028", "\u2029", "\x85"):
        hostile = dataclasses.replace(
            reply, subject=f"Hi{separator}Bcc: v@example.net", from_=f"x@example.test{separator}X: y"
        )
        head = build_reply(hostile, now=NOW).split(b"\r\n\r\n", 1)[0].decode("utf-8")
        assert separator not in head
        assert not any(line.startswith(("Bcc:", "X:")) for line in head.splitlines())
        parsed = email.message_from_bytes(build_reply(hostile, now=NOW), policy=email.policy.default)
        assert separator not in str(parsed["Subject"])
        assert parsed["Bcc"] is None and parsed["X"] is None


def test_mime_reason_is_used_as_the_entity() -> None:
    script = compile_text(
        'require "vacation";\nvacation :mime text:\nContent-Type: text/plain; charset=us-ascii\n\nAway.\n.\n;\n',
        "v",
    )
    reply = run([script], message(), SieveEnvelope("bob@example.org", ALICE), now=NOW).vacation
    assert reply is not None
    parsed = email.message_from_bytes(build_reply(reply, now=NOW), policy=email.policy.default)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().strip() == "Away."
