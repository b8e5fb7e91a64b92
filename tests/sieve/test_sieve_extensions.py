"""Sieve extensions beyond the base set: what the Pigeonhole corpus cannot show (errors, limits, hostile input).

Agreement with Pigeonhole action by action is ``test_sieve_corpus.py``'s job (cases ``rel_*``,
``regex_*``, ``date_*``…); here are mda's own guarantees: a user's regular expression cannot stall
delivery, what mda refuses names the file and line, keys built from variables fail at run time only.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mda.sieve import (
    Discard,
    FileInto,
    HeaderSpec,
    Keep,
    RuntimeFault,
    ScoreTest,
    SieveEnvelope,
    SieveError,
    SieveSettings,
    VacationState,
    compile_file,
    compile_text,
    run,
)

ENVELOPE = SieveEnvelope("bob@example.org", "alice@example.test")


def actions(script: str, message: bytes, **kwargs: object) -> tuple[object, ...]:
    outcome = run([compile_text(script, "t.sieve")], message, ENVELOPE, **kwargs)  # type: ignore[arg-type]
    return outcome.actions + tuple(outcome.errors)


def compile_error(script: str) -> SieveError:
    with pytest.raises(SieveError) as info:
        compile_text(script, "user.sieve")
    return info.value


# -- relational, i;ascii-numeric ------------------------------------------------------------------


def test_spam_score_rule_files_by_numeric_value() -> None:
    script = (
        'require ["fileinto", "relational", "comparator-i;ascii-numeric"];\n'
        'if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; }\n'
    )
    assert actions(script, b"X-Spam-Score: 12\n\nx\n") == (FileInto("Junk"),)
    assert actions(script, b"X-Spam-Score: 4\n\nx\n") == (Keep(),)
    # A value without leading digits is positive infinity (RFC 4790 §9.1), as Pigeonhole has it.
    assert actions(script, b"X-Spam-Score: -3\n\nx\n") == (FileInto("Junk"),)
    # No such field: :value has nothing to compare.
    assert actions(script, b"Subject: x\n\nx\n") == (Keep(),)


def test_count_of_an_absent_field_is_zero() -> None:
    script = 'require ["fileinto", "relational"];\nif header :count "eq" "x-none" "0" { fileinto "Z"; }\n'
    assert actions(script, b"Subject: x\n\nx\n") == (FileInto("Z"),)


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ('require "relational";\nif header :value "greater" "a" "1" { stop; }\n', 2, "invalid relation"),
        ('require "relational";\nif header :value "GE" "a" "1" { stop; }\n', 2, "invalid relation"),
        (
            'require "relational";\n\nif header :value "ge" :comparator "i;ascii-numeric" "a" "1" {}\n',
            3,
            "needs require",
        ),
        (
            'require "comparator-i;ascii-numeric";\nif header :matches :comparator "i;ascii-numeric" "a" "1" {}\n',
            2,
            ":matches",
        ),
        ('if header :count "eq" "a" "1" { stop; }\n', 1, 'needs require "relational"'),
        ('require "comparator-i;nonsense";\n', 1, "unknown Sieve capability 'comparator-i;nonsense'"),
    ],
)
def test_relational_misuse_is_a_compile_error_with_line(script: str, line: int, fragment: str) -> None:
    error = compile_error(script)
    assert error.line == line and fragment in error.message, error


# -- regex --------------------------------------------------------------------------------------------

HOSTILE = [
    ("^(a+)+$", b"a" * 50_000 + b"b"),
    ("^(a|aa)+c$", b"a" * 50_000),
    ("(x+x+)+y", b"x" * 50_000),
    ("^(([a-z])+.)+[A-Z]([a-z])+$", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" * 1000 + b"!"),
]


@pytest.mark.parametrize(("pattern", "text"), HOSTILE)
def test_catastrophic_backtracking_patterns_run_in_linear_time(pattern: str, text: bytes) -> None:
    """Patterns that take a backtracking engine (Python's ``re``, glibc's ``regexec`` on some inputs)
    longer than the age of the universe on these texts: RE2 answers in milliseconds."""
    script = f'require ["fileinto", "regex"];\nif header :regex "x-long" "{pattern}" {{ fileinto "hit"; }}\n'
    message = b"X-Long: " + text + b"\nSubject: x\n\nbody\n"
    started = time.monotonic()
    for _ in range(3):
        assert actions(script, message) == (Keep(),)
    assert time.monotonic() - started < 2.0


def test_hostile_pattern_from_a_variable_is_bounded_too() -> None:
    script = (
        'require ["fileinto", "regex", "variables"];\n'
        'set "p" "^(a+)+$";\n'
        'if header :regex "x-long" "${p}" { fileinto "hit"; }\n'
    )
    started = time.monotonic()
    assert actions(script, b"X-Long: " + b"a" * 50_000 + b"b\n\nx\n") == (Keep(),)
    assert time.monotonic() - started < 2.0


def test_backreference_is_refused_naming_line() -> None:
    error = compile_error('require ["fileinto", "regex"];\n\nif header :regex "subject" "(a)\\\\1" { stop; }\n')
    assert (error.file, error.line) == ("user.sieve", 3)
    assert "backreference '\\1'" in error.message


def test_backreference_inside_brackets_is_a_plain_character() -> None:
    script = 'require ["fileinto", "regex"];\nif header :regex "subject" "[\\\\1]" { fileinto "one"; }\n'
    assert actions(script, b"Subject: a1b\n\nx\n") == (FileInto("one"),)


def test_pattern_from_variable_with_backreference_is_a_runtime_error() -> None:
    script = (
        'require ["fileinto", "regex", "variables"];\n'
        'set "p" "(a)\\\\1";\n'
        'if header :regex "subject" "${p}" { fileinto "x"; }\n'
    )
    outcome = run([compile_text(script, "t.sieve")], b"Subject: aa\n\nx\n", ENVELOPE)
    assert outcome.actions == (Keep(),)
    assert outcome.errors and outcome.errors[0].file == "t.sieve" and outcome.errors[0].line == 3
    assert "backreference" in outcome.errors[0].message


def test_regex_with_numeric_comparator_is_refused() -> None:
    error = compile_error(
        'require ["regex", "comparator-i;ascii-numeric"];\nif header :regex :comparator "i;ascii-numeric" "a" "1" {}\n'
    )
    assert error.line == 2 and "does not support the :regex" in error.message


def test_regex_match_variables() -> None:
    script = (
        'require ["fileinto", "regex", "variables"];\n'
        'if header :regex "subject" "^\\\\[([^]]+)\\\\] (.*)$" { fileinto "${1}.${0}"; }\n'
    )
    assert actions(script, b"Subject: [dev] hello\n\nx\n") == (FileInto("dev.[dev] hello"),)


# -- date, index ----------------------------------------------------------------------------------

RECEIVED = (
    b"Received: from a by mx; Tue, 10 Mar 2026 14:30:05 +0100\n"
    b"Received: from b by a; Tue, 10 Mar 2026 14:30:01 +0100\n"
    b"Received: from c by b; Mon, 09 Mar 2026 23:59:58 -0700\n"
    b"Date: Mon, 09 Mar 2026 23:59:00 -0700\n\nx\n"
)


def test_date_index_picks_the_occurrence() -> None:
    """RFC 5260 §6 (Pigeonhole 0.5 ignores :index on date and reads the first field)."""
    script = (
        'require ["date", "index", "fileinto", "variables"];\n'
        'if date :matches :index 2 :originalzone "received" "time" "*" { fileinto "second.${0}"; }\n'
        'if date :matches :index 1 :last :originalzone "received" "date" "*" { fileinto "oldest.${0}"; }\n'
        'if date :index 4 "received" "year" "2026" { fileinto "none"; }\n'
    )
    assert actions(script, RECEIVED) == (FileInto("second.14:30:01"), FileInto("oldest.2026-03-09"))


def test_date_converts_zones() -> None:
    script = (
        'require ["date", "fileinto", "variables"];\n'
        'if date :matches :zone "+0000" "date" "iso8601" "*" { fileinto "${0}"; }\n'
    )
    assert actions(script, RECEIVED) == (FileInto("2026-03-10T06:59:00Z"),)


def test_currentdate_reads_the_delivery_clock() -> None:
    """A vacation bounded by dates, as Roundcube writes it, answers only inside the range."""
    script = (
        'require ["date", "relational", "fileinto"];\n'
        'if allof (currentdate :value "ge" "date" "2026-07-01", currentdate :value "le" "date" "2026-07-14")'
        ' { fileinto "away"; }\n'
    )
    inside = 1_783_000_000.0  # 2026-07-02
    assert actions(script, b"Subject: x\n\nx\n", now=inside) == (FileInto("away"),)
    assert actions(script, b"Subject: x\n\nx\n", now=inside + 30 * 86400) == (Keep(),)


def test_currentdate_zone_shifts_the_day() -> None:
    script = (
        'require ["date", "fileinto", "variables"];\n'
        'if currentdate :matches :zone "+1300" "date" "*" { fileinto "${0}"; }\n'
    )
    noon_utc = 1_783_000_000.0 - 1_783_000_000.0 % 86400 + 12 * 3600  # 2026-07-02 12:00 UTC
    assert actions(script, b"\nx\n", now=noon_utc) == (FileInto("2026-07-03"),)


# -- encoded-character, environment, ihave, vacation-seconds, spamtest ------------------------------


def test_encoded_characters_are_decoded_once_at_compile_time() -> None:
    script = 'require ["encoded-character", "fileinto"];\nfileinto "${hex:49 4E}${unicode:0042 4f}X";\n'
    assert actions(script, b"\nx\n") == (FileInto("INBOX"),)  # "IN" + "BO" + "X"


def test_encoded_octets_that_are_not_utf8_are_refused() -> None:
    error = compile_error('require ["encoded-character", "fileinto"];\nfileinto "${hex:ff}";\n')
    assert error.line == 2 and "not UTF-8" in error.message


def test_environment_describes_final_delivery() -> None:
    script = (
        'require ["environment", "fileinto", "variables"];\n'
        'if environment :matches "location" "*" { set "l" "${1}"; }\n'
        'if environment :matches "phase" "*" { set "p" "${1}"; }\n'
        'if environment :matches "host" "*" { set "h" "${1}"; }\n'
        'if environment :matches "name" "*" { set "n" "${1}"; }\n'
        'if environment :matches "remote-ip" "*" { set "r" "unexpected"; }\n'
        'fileinto "${l}-${p}-${h}-${n}${r}";\n'
    )
    settings = SieveSettings(environment={"host": "mx.example.test"})
    assert actions(script, b"\nx\n", settings=settings) == (FileInto("MDA-during-mx.example.test-mda"),)


def test_ihave_block_with_unknown_commands_compiles_and_never_runs() -> None:
    script = (
        'require ["ihave", "fileinto"];\n'
        'if ihave "x-foo" { foo :bar "baz"; } elsif ihave "regex" { if header :regex "subject" "^a+$" '
        '{ fileinto "regex"; } }\n'
    )
    assert actions(script, b"Subject: aaa\n\nx\n") == (FileInto("regex"),)
    # Outside an ihave block the same command is an error.
    assert "unknown command 'foo'" in compile_error('require "ihave";\nfoo :bar "baz";\n').message


def test_vacation_seconds_period() -> None:
    """RFC 6131: the period in seconds, held to the same minimum of one day as :days (Pigeonhole's
    default sieve_vacation_min_period)."""
    script = 'require "vacation-seconds";\nvacation :seconds %d :subject "Away" "Gone.";\n'
    message = b"From: bob@example.org\nTo: alice@example.test\nSubject: hi\n\nx\n"
    for seconds, period in ((3600, 86400), (3 * 86400, 3 * 86400), (10**9, 60 * 86400)):
        outcome = run([compile_text(script % seconds, "t.sieve")], message, ENVELOPE)
        assert outcome.vacation is not None and outcome.vacation.period == period


@pytest.mark.parametrize(
    ("status", "expected", "percent"),
    [("7.3", "7", "73"), ("-4", "1", "0"), ("25", "10", "100"), ("0", "1", "0"), ("abc", "0", "0"), (None, "0", "0")],
)
def test_spamtest_scale(status: str | None, expected: str, percent: str) -> None:
    """Score / max scaled to 1..10 (0: not tested), :percent to 0..100, as Pigeonhole computes them."""
    script = (
        'require ["spamtestplus", "fileinto", "variables"];\n'
        'if spamtest :matches "*" { set "s" "${1}"; }\n'
        'if spamtest :percent :matches "*" { fileinto "${s}-${1}"; }\n'
    )
    settings = SieveSettings(spamtest=ScoreTest(HeaderSpec.parse("X-Spam-Score"), max_value=10))
    message = (b"" if status is None else b"X-Spam-Score: " + status.encode() + b"\n") + b"\nx\n"
    assert actions(script, message, settings=settings) == (FileInto(f"{expected}-{percent}"),)


# -- include --------------------------------------------------------------------------------------


def test_include_named_by_a_variable_resolves_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "work.sieve").write_text('require "fileinto";\nfileinto "Work";\n')
    main = tmp_path / "main.sieve"
    main.write_text(
        'require ["include", "variables"];\n'
        'if header :matches "x-rule" "*" { set "rule" "${1}"; }\n'
        'include :optional "${rule}";\n'
    )
    script = compile_file(main)
    assert run([script], b"X-Rule: work\n\nx\n", ENVELOPE).actions == (FileInto("Work"),)
    assert run([script], b"X-Rule: nothing\n\nx\n", ENVELOPE).actions == (Keep(),)
    # An unsafe name never leaves the directory.
    outcome = run([script], b"X-Rule: ../main\n\nx\n", ENVELOPE)
    assert outcome.actions == (Keep(),)


def test_include_recursion_through_a_variable_stops_at_the_nesting_limit(tmp_path: Path) -> None:
    loop = tmp_path / "loop.sieve"
    loop.write_text('require ["include", "variables"];\nset "me" "loop";\ninclude "${me}";\n')
    outcome = run([compile_file(loop)], b"\nx\n", ENVELOPE)
    assert outcome.actions == (Keep(),)
    assert outcome.errors and "nested deeper than 10" in outcome.errors[0].message


def test_include_sees_a_script_added_later(tmp_path: Path) -> None:
    """The included scripts are looked up on every use: adding a missing one fixes the includer."""
    main = tmp_path / "main.sieve"
    main.write_text('require "include";\ninclude "later";\n')
    with pytest.raises(SieveError) as info:
        compile_file(main)
    assert info.value.line == 2 and "included script 'later' not found" in info.value.message
    (tmp_path / "later.sieve").write_text('require "fileinto";\nfileinto "Later";\n')
    assert run([compile_file(main)], b"\nx\n", ENVELOPE).actions == (FileInto("Later"),)


# -- duplicate ------------------------------------------------------------------------------------


def test_duplicate_within_one_delivery_and_across_deliveries(tmp_path: Path) -> None:
    state = VacationState(tmp_path / "state.sqlite")
    script = compile_text(
        'require ["duplicate", "fileinto"];\n'
        'if duplicate :seconds 100 { fileinto "second-test"; }\n'
        'if duplicate :seconds 100 { fileinto "dup"; }\n',
        "t.sieve",
    )
    message = b"Message-ID: <m@example.org>\n\nx\n"
    first = run([script], message, ENVELOPE, vacation_state=state, now=1000.0)
    assert first.actions == (FileInto("dup"),) and len(first.duplicates) == 2
    state.record_duplicates(ENVELOPE.recipient, first.duplicates, now=1000.0)
    later = run([script], message, ENVELOPE, vacation_state=state, now=1050.0)
    assert later.actions == (FileInto("second-test"), FileInto("dup"))
    expired = run([script], message, ENVELOPE, vacation_state=state, now=1101.0)
    assert expired.actions == (FileInto("dup"),)
    # Another recipient has a record of its own.
    other = run([script], message, SieveEnvelope("bob@example.org", "carol@example.test"), vacation_state=state)
    assert other.actions == (FileInto("dup"),)


def test_duplicate_last_extends_the_period(tmp_path: Path) -> None:
    state = VacationState(tmp_path / "state.sqlite")
    plain = compile_text('require "duplicate";\nif duplicate :seconds 100 { discard; }\n', "t.sieve")
    last = compile_text('require "duplicate";\nif duplicate :last :seconds 100 { discard; }\n', "t.sieve")
    message = b"Message-ID: <m@example.org>\n\nx\n"
    for script, now in ((plain, 1000.0), (last, 1090.0)):
        outcome = run([script], message, ENVELOPE, vacation_state=state, now=now)
        state.record_duplicates(ENVELOPE.recipient, outcome.duplicates, now=now)
    # Without :last the ID would have expired at 1100; :last at 1090 moved it to 1190.
    assert run([plain], message, ENVELOPE, vacation_state=state, now=1150.0).actions == (Discard(),)


# -- hostile input --------------------------------------------------------------------------------


def test_regex_too_large_for_the_engine_is_a_compile_error() -> None:
    error = compile_error('require "regex";\nif header :regex "subject" "((a{1000}){1000}){1000}" { stop; }\n')
    assert error.line == 2 and "invalid regular expression" in error.message


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 10 Mar 99999999999999999999 14:30:00 +0100",
        "Tue, 99 Foo 2026 99:99:99 +9999",
        "\x00\xff" * 1000,
        "",
        "Tue, 10 Mar 2026 14:30:00 +0100" + " x" * 100_000,
    ],
)
def test_hostile_dates_match_nothing(value: str) -> None:
    script = (
        'require ["date", "index", "relational", "fileinto"];\n'
        'if date :value "ge" "date" "year" "0000" { fileinto "parsed"; }\n'
        'if date :index 9223372036854775807 "date" "year" "2026" { fileinto "index"; }\n'
    )
    message = b"Date: " + value.encode("utf-8", "surrogateescape") + b"\n\nx\n"
    assert FileInto("index") not in actions(script, message)


def test_hostile_encoded_characters_compile_in_linear_time() -> None:
    started = time.monotonic()
    big = "${hex:" + " 41" * 100_000 + "}"
    script = compile_text(f'require ["encoded-character", "variables"];\nset "a" "{big}${{hex:zz}}";\n', "t.sieve")
    assert script is not None and time.monotonic() - started < 2.0


# -- mime, foreverypart, extracttext ----------------------------------------------------------------


def nested_multipart(depth: int) -> bytes:
    head = b"Subject: deep\nMIME-Version: 1.0\n"
    parts = [b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)]
    inner = b"Content-Type: text/plain\n\ndeepest\n"
    closes = [b"\n--b%d--\n" % i for i in reversed(range(depth))]
    return head + b"".join(parts) + inner + b"".join(closes)


@pytest.mark.parametrize("depth", [5, 40, 3000])
def test_deeply_nested_mime_is_bounded(depth: int) -> None:
    """A hostile nesting of multiparts neither crashes nor stalls the loop: parts below 32 levels (or a
    structure Python's parser cannot build) are not visited, and a parse too costly for the work limit
    is a runtime error (the message is kept)."""
    script = (
        'require ["foreverypart", "mime", "variables", "fileinto", "extracttext"];\n'
        'set "n" "0";\n'
        "foreverypart {\n"
        '  if header :mime :type "content-type" "text" { extracttext "t"; fileinto "text-${t}"; }\n'
        "}\n"
        'if header :mime :anychild :subtype "content-type" "plain" { fileinto "anychild-plain"; }\n'
    )
    started = time.monotonic()
    result = actions(script, nested_multipart(depth))
    assert time.monotonic() - started < 5.0
    if depth < 32:
        assert FileInto("text-deepest\n") in result or FileInto("text-deepest") in result
        assert FileInto("anychild-plain") in result
    # Parsing a hostile structure is charged to the work limit (sieve.work_limit): a runtime error, kept.
    errors = [a for a in result if isinstance(a, RuntimeFault)]
    assert all("work limit" in e.message for e in errors), result
    assert all(isinstance(a, (FileInto, Keep, RuntimeFault)) for a in result), result


def test_break_names_an_enclosing_loop() -> None:
    error = compile_error('require "foreverypart";\nforeverypart :name "a" {\n  break :name "b";\n}\n')
    assert error.line == 3 and "no enclosing loop 'b'" in error.message


def test_extracttext_outside_a_loop_is_refused() -> None:
    error = compile_error('require ["extracttext", "variables", "foreverypart"];\nextracttext "x";\n')
    assert error.line == 2 and "outside a foreverypart loop" in error.message


def test_regex_and_relational_spend_the_work_limit() -> None:
    """The extension match types charge the run's work units (sieve.work_limit) like :contains does."""
    message = b"Subject: " + b"a" * 10_000 + b"\nX-Score: 5\n\nx\n"
    for script in (
        'require ["regex", "fileinto"];\nif header :regex "subject" "b$" { fileinto "x"; }\n',
        'require ["relational", "fileinto"];\nif header :value "gt" "subject" "b" { fileinto "x"; }\n',
    ):
        outcome = run([compile_text(script, "t.sieve")], message, ENVELOPE, work_limit=5_000)
        assert outcome.actions == (Keep(),) and "work limit" in outcome.errors[0].message, outcome
        assert run([compile_text(script, "t.sieve")], message, ENVELOPE).errors == ()


# -- editheader ----------------------------------------------------------------------------------


def test_editheader_edits_are_seen_by_later_scripts_and_returned() -> None:
    """A sieve_before script's edit is what the user's script tests; the outcome carries the section."""
    before = compile_text('require "editheader";\naddheader "X-Spam" "yes";\ndeleteheader "X-Old";\n', "b")
    user = compile_text('require "fileinto";\nif header :is "X-Spam" "yes" { fileinto "Junk"; }\n', "u")
    outcome = run([before, user], b"X-Old: 1\nSubject: s\n\nbody\n", ENVELOPE)
    assert outcome.actions == (FileInto("Junk"),)
    assert outcome.header == b"X-Spam: yes\nSubject: s\n"
    assert run([user], b"Subject: s\n\nbody\n", ENVELOPE).header is None


def test_editheader_folds_long_values_and_encodes_non_ascii() -> None:
    script = 'require "editheader";\naddheader "X-Long" "' + "word " * 30 + '";\naddheader "X-Cafe" "café\nnext";\n'
    header = run([compile_text(script, "t")], b"A: 1\n\nb\n", ENVELOPE).header
    assert header is not None
    lines = header.decode("ascii").split("\n")
    assert lines[0] == "X-Cafe: =?utf-8?q?caf=C3=A9_next?=" and all(len(line) <= 78 for line in lines)
    assert lines[1].startswith("X-Long: word") and lines[2].startswith("\tword")


@pytest.mark.parametrize(
    "body",
    [
        'addheader "X-A" "yyyyyyyyyyyyyyyyyyyy";\n',
        'addheader "X-A" "y"; deleteheader "X-B";\n',
        'addheader "X-A" "y"; if header :is "X-B" "1" { stop; }\n',
    ],
)
def test_editheader_loops_spend_the_work_limit(body: str) -> None:
    """Each edit rebuilds the header section and each later read splits it again: a long script of
    edits is stopped by the work limit (the message kept unedited), not left to grow quadratically."""
    script = compile_text('require "editheader";\n' + body * (200_000 // len(body)), "t.sieve")
    outcome = run([script], b"A: 1\n\nbody\n", ENVELOPE, work_limit=50_000_000)
    assert outcome.actions == (Keep(),) and "work limit" in outcome.errors[0].message and outcome.header is None
