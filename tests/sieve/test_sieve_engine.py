"""Engine behaviour beyond the corpus: compile errors, the file cache, runtime errors, hostile input."""

from __future__ import annotations

import email.utils
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mda.sieve import (
    Discard,
    FileInto,
    Keep,
    Outcome,
    Redirect,
    Reject,
    RuntimeFault,
    SieveEnvelope,
    SieveError,
    compile_file,
    compile_text,
    run,
)
from mda.sieve.interpreter import MAX_EXPANDED, MAX_VARIABLE_SIZE
from mda.sieve.match import keys_for
from mda.sieve.message import SieveMessage, parse_address_list, split_address

MESSAGE = (
    b"From: Bob <bob@example.org>\nTo: Alice <alice@example.test>\nSubject: Meeting on Monday\n"
    b"Message-ID: <m1@example.org>\n\nHello Alice.\n"
)
ENVELOPE = SieveEnvelope("bob@example.org", "alice@example.test")


def outcome_of(
    script: str, message: bytes = MESSAGE, envelope: SieveEnvelope = ENVELOPE, delimiter: str = "+"
) -> Outcome:
    return run([compile_text(script, "t.sieve")], message, envelope, delimiter=delimiter)


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ("keep;\nfrobnicate;\n", 2, "unknown command 'frobnicate'"),
        ('keep;\n\nfileinto "x";\n', 3, 'needs require "fileinto"'),
        ('require "fileinto";\nkeep;\nrequire "reject";\n', 3, "require must come before"),
        ('require "nosuchext";\n', 1, "unknown Sieve capability 'nosuchext'"),
        ("keep;\nelsif true { keep; }\n", 2, "elsif without a preceding if"),
        ("if true { keep; }\nelse { keep; }\nelse { keep; }\n", 3, "else without a preceding if"),
        ('\nif header :comparator "i;nope" :is "a" "b" { keep; }\n', 2, "unknown comparator"),
        ('\n\nredirect "not an address";\n', 3, "redirect address"),
        ('if header :is :contains "a" "b" { keep; }\n', 1, "conflicts with an earlier tag"),
        ('if header :regex "a" "b" { keep; }\n', 1, "':regex' needs require \"regex\""),
        ('if header :nosuchmatch "a" "b" { keep; }\n', 1, "unknown tag ':nosuchmatch'"),
        ('if header "a" { keep; }\n', 1, "expects 2 positional"),
        ('require "variables";\nset "1bad" "x";\n', 2, "invalid variable name"),
        ('require "envelope";\nif envelope "cc" "x" { keep; }\n', 2, "unknown envelope part"),
        ('require "fileinto";\nfileinto ["a", "b"];\n', 2, "single string"),
        ("if true keep;\n", 1, "if needs a block"),
        ("if anyof (true, nosuch) { keep; }\n", 1, "unknown test 'nosuch'"),
        ("if size 100 { keep; }\n", 1, "expects 0 positional"),
        ('if address :user "to" "x" { keep; }\n', 1, 'needs require "subaddress"'),
        ("keep { stop; }\n", 1, "takes no block"),
        ('require "imap4flags";\naddflag "var" "x";\n', 2, 'needs require "variables"'),
        ('require "fileinto";\nfileinto :copy "x";\n', 2, 'needs require "copy"'),
    ],
)
def test_compile_errors_name_file_and_line(script: str, line: int, fragment: str) -> None:
    with pytest.raises(SieveError) as info:
        compile_text(script, "user.sieve")
    assert (info.value.file, info.value.line) == ("user.sieve", line)
    assert fragment in info.value.message
    assert str(info.value) == f"user.sieve:{line}: {info.value.message}"


def test_compile_file_caches_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "user.sieve"
    path.write_text("keep;\n")
    first = compile_file(path)
    assert compile_file(path) is first
    path.write_text("discard;\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = compile_file(path)
    assert second is not first
    assert run([second], MESSAGE, ENVELOPE).actions == (Discard(),)


def test_compile_file_reports_a_broken_file_every_time(tmp_path: Path) -> None:
    path = tmp_path / "user.sieve"
    path.write_bytes(b'keep;\nfileinto "\xc3\x28";\n')
    for _ in range(2):
        with pytest.raises(SieveError, match=r"user\.sieve:2: script is not valid UTF-8"):
            compile_file(path)


def test_compile_file_parses_a_broken_file_once_until_it_changes(tmp_path: Path) -> None:
    """The error is cached by mtime and size like a script: same size and mtime, no new parse."""
    path = tmp_path / "user.sieve"
    path.write_text("keep;\nfrobnicate;\n")
    stat = path.stat()
    with pytest.raises(SieveError, match=r"user\.sieve:2: unknown command") as first:
        compile_file(path)
    path.write_text("discard;" + " " * 9 + "\n")  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(SieveError, match=r"user\.sieve:2: unknown command") as second:
        compile_file(path)
    assert second.value is not first.value
    os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns + 10**9))
    assert run([compile_file(path)], MESSAGE, ENVELOPE).actions == (Discard(),)


def test_ereject_is_a_reject_marked_for_protocol_level_refusal() -> None:
    outcome = outcome_of('require "ereject";\nereject "mailbox closed";\n')
    assert outcome.actions == (Reject("mailbox closed", ereject=True),)


def test_runtime_conflict_falls_back_to_implicit_keep_without_flags() -> None:
    outcome = outcome_of('require ["reject", "imap4flags"];\naddflag "\\\\Seen";\nkeep;\nreject "no";\n')
    assert outcome.actions == (Keep(),)
    assert outcome.errors == (RuntimeFault("t.sieve", 4, "reject action conflicts with the store action at line 3"),)
    assert str(outcome.errors[0]) == "t.sieve:4: reject action conflicts with the store action at line 3"


def test_redirect_cancels_implicit_keep_unless_copy() -> None:
    assert outcome_of('redirect "c@example.net";').actions == (Redirect("c@example.net"),)
    copied = outcome_of('require "copy";\nredirect :copy "c@example.net";').actions
    assert copied == (Keep(), Redirect("c@example.net", copy=True))


def test_fileinto_create_and_flags_reach_the_action() -> None:
    script = 'require ["fileinto", "mailbox", "imap4flags"];\nfileinto :create :flags "\\\\Seen" "Lists";\n'
    assert outcome_of(script).actions == (FileInto("Lists", ("\\Seen",), create=True),)


def test_configurable_subaddress_delimiters() -> None:
    script = 'require ["envelope", "subaddress", "fileinto"];\nif envelope :detail "to" "lists" { fileinto "L"; }'
    envelope = SieveEnvelope("bob@example.org", "alice-lists@example.test")
    assert outcome_of(script, envelope=envelope, delimiter="+-").actions == (FileInto("L"),)
    assert outcome_of(script, envelope=envelope).actions == (Keep(),)


def test_envelope_from_null_sender_is_the_empty_string() -> None:
    script = 'require ["envelope", "fileinto"];\nif envelope :is "from" "" { fileinto "Bounce"; }\n'
    assert outcome_of(script, envelope=SieveEnvelope("", "alice@example.test")).actions == (FileInto("Bounce"),)


def test_envelope_to_prefers_the_original_recipient() -> None:
    script = 'require ["envelope", "fileinto"];\nif envelope :is "to" "orig@example.test" { fileinto "O"; }\n'
    envelope = SieveEnvelope("bob@example.org", "alice@example.test", "orig@example.test")
    assert outcome_of(script, envelope=envelope).actions == (FileInto("O"),)


def test_too_many_actions_is_a_runtime_error() -> None:
    script = 'require "fileinto";\n' + "".join(f'fileinto "f{i}";\n' for i in range(40))
    outcome = outcome_of(script)
    assert outcome.actions == (Keep(),)
    assert "more than 32 actions" in outcome.errors[0].message


# -- hostile input ------------------------------------------------------------------------------


def test_hostile_message_bytes_are_tolerated() -> None:
    message = b"Subject: caf\xe9 \x00 =?bogus?Q?x?= =?utf-8?B?!!!?=\nFrom: <<>>@@\n\n\x00\xff body\n"
    script = (
        'require ["body", "fileinto"];\nif anyof (header :contains "subject" "caf",'
        ' address :domain "from" "x", body :contains "body") { fileinto "Odd"; }\n'
    )
    assert outcome_of(script, message=message).actions == (FileInto("Odd"),)


@pytest.mark.parametrize("message", [b"", b"\n", b"no header separator", b"\r\n\r\nbody only"])
def test_degenerate_messages(message: bytes) -> None:
    assert outcome_of('if exists "subject" { discard; }', message=message).actions == (Keep(),)


def test_pathological_wildcards_stay_fast() -> None:
    message = b"Subject: " + b"a" * 20000 + b"\n\n"
    script = 'if header :matches "subject" "' + "*a" * 200 + '*b" { discard; }\n'
    start = time.perf_counter()
    assert outcome_of(script, message=message).actions == (Keep(),)
    assert time.perf_counter() - start < 2.0


def test_work_limit_stops_a_run_at_the_same_place_every_time() -> None:
    """Units, not time: rule 3 passes 25M units (100 keys × 100 kB per rule), on any machine."""
    keys = ", ".join(f'"absent{i}"' for i in range(100))
    script = compile_text(
        'require "body";\n' + f"if body :raw :contains [{keys}] {{ keep; }}\n" * 10 + "discard;\n", "t.sieve"
    )
    message = b"Subject: s\n\n" + b"word " * 20_000
    stopped = [run([script], message, ENVELOPE, work_limit=25_000_000) for _ in range(2)]
    assert stopped[0] == stopped[1]
    assert stopped[0].actions == (Keep(),)
    assert stopped[0].errors == (
        RuntimeFault("t.sieve", 4, "work limit of 25000000 units exceeded (sieve.work_limit)"),
    )
    assert run([script], message, ENVELOPE).actions == (Discard(),)


def test_variable_expansions_count_against_the_work_limit() -> None:
    script = 'require "variables";\nset "a" "' + "x" * 4000 + '";\n' + 'set "b" "${a}${a}";\n' * 100
    outcome = run([compile_text(script, "t.sieve")], MESSAGE, ENVELOPE, work_limit=100_000)
    assert outcome.actions == (Keep(),)
    # 8000 units per `set "b"`: the 13th, on line 15, passes 100,000.
    assert outcome.errors == (RuntimeFault("t.sieve", 15, "work limit of 100000 units exceeded (sieve.work_limit)"),)


def test_huge_address_fields_are_charged_before_they_are_parsed() -> None:
    """Parsing an address list takes about 15 µs a character on hostile input: 14 s for 1 MiB of ``@``."""
    message = b"From: bob@example.org\nTo: " + b"@" * 500_000 + b"\nSubject: s\n\nbody\n"
    start = time.perf_counter()
    outcome = outcome_of('\nif address :all "to" "alice@example.test" { discard; }\n', message=message)
    assert outcome.actions == (Keep(),)
    assert outcome.errors == (RuntimeFault("t.sieve", 2, "work limit of 1073741824 units exceeded (sieve.work_limit)"),)
    # The vacation checks read To and Cc after the scripts: no reply, and the reason is given.
    outcome = outcome_of('require "vacation";\nvacation "away";\n', message=message)
    assert (outcome.actions, outcome.errors) == ((Keep(),), ())
    assert outcome.vacation_skipped is not None and "work limit" in outcome.vacation_skipped
    assert time.perf_counter() - start < 5.0  # both refused before the parse, not after it


def test_variable_values_are_bounded() -> None:
    big = "x" * (MAX_VARIABLE_SIZE * 2)
    script = f'require ["variables", "fileinto"];\nset "a" "{big}";\nset :length "n" "${{a}}";\nfileinto "${{n}}";'
    assert outcome_of(script).actions == (FileInto(str(MAX_VARIABLE_SIZE)),)


def test_expansion_blowup_is_a_runtime_error() -> None:
    refs = "${a}" * (MAX_EXPANDED // MAX_VARIABLE_SIZE + 2)
    script = f'require ["variables", "fileinto"];\nset "a" "{"y" * MAX_VARIABLE_SIZE}";\nfileinto "{refs}";'
    outcome = outcome_of(script)
    assert outcome.actions == (Keep(),)
    assert "after expansion" in outcome.errors[0].message


def test_keys_built_from_message_text_are_not_kept() -> None:
    """Keys prepared for a comparison are cached only when they are the script's own constants: keys
    expanded from variables hold message text, and a cache would keep up to 1 MiB of it per entry."""
    script = (
        'require ["variables", "fileinto"];\n'
        'if header :matches "subject" "*" { set "seen" "${1}"; }\n'
        'if header :contains "subject" "${seen}" { fileinto "Same"; }\n'
    )
    before = keys_for.cache_info().currsize
    for n in range(50):
        message = f"Subject: message number {n} {'x' * 1000}\n\nbody\n".encode()
        assert outcome_of(script, message=message).actions == (FileInto("Same"),)
    assert keys_for.cache_info().currsize == before


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_script_bytes_never_crash(data: bytes) -> None:
    try:
        script = compile_text(data.decode("utf-8", errors="replace"), "fuzz.sieve")
    except SieveError as exc:
        assert str(exc).startswith("fuzz.sieve:")
        return
    run([script], MESSAGE, ENVELOPE)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='ifelsekeep{}();:"[],#*/\\ \n text:.requirehdaesz', max_size=200))
def test_random_sieve_like_text_never_crashes(text: str) -> None:
    try:
        script = compile_text(text, "fuzz.sieve")
    except SieveError as exc:
        assert exc.line >= 1
        return
    run([script], MESSAGE, ENVELOPE)


# -- the fast paths agree with their plain definitions ---------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"ab:\r\n "[c % 6] for c in b)))
def test_header_section_ends_at_the_first_empty_line(raw: bytes) -> None:
    """The header/body split is two bounded finds; its definition is RFC 5322's first empty line."""
    message = SieveMessage(raw)
    if raw.startswith((b"\n", b"\r\n")):
        expected = (b"", raw.split(b"\n", 1)[1])
    else:
        separator = re.search(rb"\r?\n\r?\n", raw)
        expected = (raw, b"") if separator is None else (raw[: separator.start()], raw[separator.end() :])
    assert (raw[: message._header_end()[0]], message.body) == expected


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet='abé .,;:<>@"()[]\\\t', max_size=24),
        st.tuples(st.sampled_from(["", "Ann Lee ", " x ", "J. Doe ", '"Q" ']), st.text("ab.@c", max_size=8)).map(
            lambda pair: f"{pair[0]}<{pair[1]}>"
        ),
    )
)
def test_plain_address_fields_parse_as_email_utils_does(value: str) -> None:
    """``Name <a@b>`` and ``a@b`` skip ``email.utils``; the answer must be the one it gives."""
    reference = [split_address(a) for _, a in email.utils.getaddresses([value]) if a]
    assert parse_address_list([value]) == reference


def test_twenty_rule_script_on_a_4k_message() -> None:
    """The shape of the throughput benchmark's script: the outcome (its speed is contrib/bench/sieve_overhead.py's)."""
    rules = "".join(
        f'if header :contains "subject" "word{i}" {{ fileinto "F{i}"; }}\n'
        if i % 3
        else f'if address :domain :is "from" "d{i}.example" {{ fileinto "D{i}"; }}\n'
        for i in range(18)
    )
    script = compile_text(
        'require ["fileinto", "imap4flags"];\n'
        + rules
        + 'if header :matches "subject" "*urgent*" { addflag "\\\\Flagged"; }\nif size :over 1M { discard; }\n',
        "perf.sieve",
    )
    message = (
        b"From: Bob <bob@example.org>\nTo: alice@example.test\nSubject: hello urgent\n"
        + b"Received: from a by b; Sat, 28 Nov 2026 12:00:00 +0000\n" * 8
        + b"\n"
        + b"lorem ipsum dolor sit amet " * 140
    )
    assert run([script], message, ENVELOPE).actions == (Keep(("\\Flagged",)),)


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ('if header :contains "X-Tag" "a" { discard; }', False),  # absent field: skipped at once
        ('if header :contains "Subject" "Monday" { discard; }', True),
        ('if exists ["X-Tag", "Subject"] { discard; }', False),  # every field must be there
        ('if exists ["Subject", "From"] { discard; }', True),
        ('if allof (header :contains "X-Tag" "a", true) { discard; }', False),
        ('if allof (header :contains "subject" "monday", address :domain :is "from" "example.org") { discard; }', True),
        ('if address :domain :is "X-Tag" "example.org" { discard; }', False),
        ('if address :domain :is "FROM" "example.org" { discard; }', True),
        ('if not header :contains "X-Tag" "a" { discard; }', True),  # not: no field is required
        ('if anyof (header :contains "X-Tag" "a", header :is "to" "Alice <alice@example.test>") { discard; }', True),
    ],
)
def test_rules_on_fields_the_message_lacks(rule: str, matches: bool) -> None:
    """A rule whose test needs a field the message lacks is skipped with one look-up; the answers are
    those of running the test."""
    assert outcome_of(rule + "\n").actions == ((Discard(),) if matches else (Keep(),))


def test_a_field_added_or_deleted_by_editheader_is_seen_by_later_rules() -> None:
    script = (
        'require ["editheader", "fileinto"];\n'
        'if header :contains "X-Tag" "a" { fileinto "Before"; }\n'
        'addheader "X-Tag" "a";\n'
        'if header :contains "X-Tag" "a" { fileinto "Added"; }\n'
        'deleteheader "Subject";\n'
        'if exists "Subject" { fileinto "Deleted"; }\n'
    )
    assert outcome_of(script).actions == (FileInto("Added"),)


def test_rules_on_absent_fields_charge_no_work() -> None:
    """Skipping a rule on an absent field skips nothing the work limit counts: the run is stopped by the
    same rule as when every test ran."""
    keys = ", ".join(f'"k{i}"' for i in range(50))
    script = compile_text(
        "".join(f'if header :contains "X-Absent-{i}" [{keys}] {{ discard; }}\n' for i in range(5))
        + f'if header :contains "subject" [{keys}] {{ discard; }}\n' * 20,
        "t.sieve",
    )
    outcome = run([script], MESSAGE, ENVELOPE, work_limit=10_000)
    # "Meeting on Monday" (17 characters) × (2 + 50) units + 50 per subject rule: 934; the 11th passes 10,000.
    assert outcome.errors == (RuntimeFault("t.sieve", 16, "work limit of 10000 units exceeded (sieve.work_limit)"),)


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet="abkKs.|()[]*+?{}^$\\-,02:<>", max_size=14),
    st.text(alphabet="abkKsS.-[]:(){}02 <>\u212a\u017f", max_size=16),
    st.booleans(),
)
def test_regex_keys_answer_as_re2_does(pattern: str, value: str, casemap: bool) -> None:
    """The texts a ``:regex`` key requires are checked before RE2 is called; that check never hides a
    match RE2 would find (the Kelvin sign and the long s fold to ASCII letters under i;ascii-casemap)."""
    from mda.sieve.budget import Meter
    from mda.sieve.ext_regex import RegexError, RegexKeys, compile_pattern

    try:
        compiled = compile_pattern(pattern, casemap)
    except RegexError:
        return
    expected = compiled.search(value)
    found = RegexKeys((pattern,), "i;ascii-casemap" if casemap else "i;octet").first([value], Meter())
    if expected is None:
        assert found is None
    else:
        assert found == [expected.group(g) or "" for g in range(compiled.groups + 1)]


@pytest.mark.parametrize(
    ("pattern", "required"),
    [
        (r"python-(dev|ideas)\.python\.org", ("python-", ".python.org")),
        (r"^\[(ALERT|CRIT)\]", ("[", "]")),
        (r"(invoice|receipt) #?[0-9]{4,}", (" ",)),
        (r"a\.b?c", ("a.", "c")),
        (r"[[:alpha:]]x\<y", ("x", "y")),
        ("a|b", None),
        ("(?i)abc", None),
        (r"\x41b", None),
    ],
)
def test_required_literals_of_a_regex(pattern: str, required: tuple[str, ...] | None) -> None:
    from mda.sieve.ext_regex import required_literals, translate

    assert required_literals(translate(pattern)) == required


@pytest.mark.parametrize(
    ("key", "match_type", "value", "matched"),
    [
        ("CAFé", "contains", "Le café", True),  # a-z fold, é stays
        ("CAFÉ", "contains", "Le café", False),  # É is not é under i;ascii-casemap
        ("STRASSE", "is", "straße", False),  # no Unicode case mapping (ß -> SS)
        ("K", "is", "\u212a", False),  # the Kelvin sign is not K
        ("Re: *", "matches", "RE: Café", True),
        ("re: café", "is", "RE: CAFé", True),
        ("RE: CAFé", "is", "re: café", True),
        ("ÿ", "contains", "Ÿ", False),
    ],
)
def test_ascii_casemap_folds_only_a_to_z(key: str, match_type: str, value: str, matched: bool) -> None:
    """i;ascii-casemap (RFC 4790 §9.2) folds ASCII letters alone, for ASCII and non-ASCII values alike."""
    script = f'require "fileinto";\nif header :{match_type} "subject" "{key}" {{ fileinto "Hit"; }}\n'
    message = f"Subject: {value}\n\nbody\n".encode()
    expected = (FileInto("Hit"),) if matched else (Keep(),)
    assert outcome_of(script, message).actions == expected
    if match_type == "is":  # relational's :value "eq" folds the same way (RFC 5231)
        relational = (
            f'require ["fileinto", "relational"];\nif header :value "eq" "subject" "{key}" {{ fileinto "Hit"; }}\n'
        )
        assert outcome_of(relational, message).actions == expected
