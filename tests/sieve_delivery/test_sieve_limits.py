"""The Sieve work limit through a real ``mda serve``: hostile scripts and messages stop, mail still lands.

Each hostile case cost seconds to minutes of CPU per recipient before the limit (24,000 ``body
:contains`` keys; a ``:matches`` key with hundreds of ``?``; a few hundred nested multiparts). Now the
run stops as a runtime error: the message goes to INBOX and the log line names the script and the
reason, as README.md ("Work limit") says.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.mdaproc import RunningServer
from tests.sieve_delivery.test_sieve_delivery import ALICE, DELIVERED, deliver, maildir, serve, stored, write_script

BODY_LINE = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\n"
LARGE_BODY = BODY_LINE * (900 * 1024 // len(BODY_LINE))
"""Under the 1 MiB above which Sieve sees the header section only."""


def large_message(subject: str, body: bytes = LARGE_BODY) -> bytes:
    return f"From: <sender@example.org>\nTo: <{ALICE}>\nSubject: {subject}\n\n".encode() + body


def many_keys_script(rules: int = 24, keys: int = 1000) -> str:
    """``rules`` × ``keys`` keys that match nothing, then ``discard``: only a stopped run keeps the message."""
    lines = ['require ["body"];']
    for rule in range(rules):
        key_list = ", ".join(f'"absent-{rule}-{key}"' for key in range(keys))
        lines.append(f"if body :contains [{key_list}] {{ keep; }}")
    lines.append("discard;")
    return "\n".join(lines) + "\n"


def work_limit_lines(server: RunningServer, script: Path) -> list[str]:
    log = server.wait_for_log("work limit")
    return [line for line in log.splitlines() if "sieve_error" in line and "work limit" in line and str(script) in line]


def test_many_body_keys_stop_at_the_work_limit_and_the_message_lands_in_inbox(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    root = tmp_path / "mail"
    script = write_script(root, many_keys_script())
    server = serve(start_mda, root)
    assert [r.code for r in deliver(server, [ALICE], large_message("keys"))] == [DELIVERED]
    [copy] = stored(maildir(root))
    assert copy.read_bytes().endswith(LARGE_BODY)
    [line] = work_limit_lines(server, script)
    assert "kind=runtime" in line and "line=3" in line, line  # the second rule: the first spends ~0.9G


def test_a_normal_script_on_a_large_body_is_unaffected(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    root = tmp_path / "mail"
    rules = "".join(f'if header :contains "subject" "topic{n}" {{ fileinto :create "T{n}"; }}\n' for n in range(18))
    write_script(
        root,
        'require ["body", "fileinto", "mailbox"];\n'
        + rules
        + 'if body :contains ["unsubscribe", "viagra"] { fileinto :create "Spam"; }\n'
        + 'if body :text :contains "needle" { fileinto :create "Found"; }\n',
    )
    server = serve(start_mda, root)
    message = large_message("hello", LARGE_BODY + b"a needle at the very end\n")
    assert [r.code for r in deliver(server, [ALICE], message)] == [DELIVERED]
    assert len(stored(maildir(root) / ".Found")) == 1
    assert stored(maildir(root)) == []
    assert "sieve_error" not in server.log()


def test_matches_key_with_many_wildcards_is_stopped(tmp_path: Path, start_mda: Callable[..., RunningServer]) -> None:
    """``?`` between ``*`` makes a match try every position against the whole key: value × key work."""
    root = tmp_path / "mail"
    script = write_script(root, 'if header :matches "subject" "*' + "a?" * 500 + 'b*" { discard; }\n')
    server = serve(start_mda, root)
    assert [r.code for r in deliver(server, [ALICE], large_message("a" * 100_000, b"short\n"))] == [DELIVERED]
    assert len(stored(maildir(root))) == 1
    [line] = work_limit_lines(server, script)
    assert "kind=runtime" in line and "line=1" in line, line


def test_deeply_nested_multiparts_are_stopped_before_parsing(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    """Python's MIME parser checks every line against every open boundary: lines × depth."""
    root = tmp_path / "mail"
    script = write_script(root, 'require "body";\nif body :text :contains "hello" { discard; }\n')
    server = serve(start_mda, root)
    depth = 400
    nested = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(depth))
    body = nested + b"--b%d\nContent-Type: text/plain\n\nhello\n" % depth + b"x\n" * 200_000
    data = f"From: <sender@example.org>\nTo: <{ALICE}>\nSubject: nested\n".encode()
    data += b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b0\n\n" + body
    assert [r.code for r in deliver(server, [ALICE], data)] == [DELIVERED]
    assert len(stored(maildir(root))) == 1
    [line] = work_limit_lines(server, script)
    assert "kind=runtime" in line and "line=2" in line, line


def test_a_lower_work_limit_is_configurable_and_zero_is_refused(
    tmp_path: Path, start_mda: Callable[..., RunningServer]
) -> None:
    root = tmp_path / "mail"
    script = write_script(root, many_keys_script(rules=1, keys=10))
    server = serve(start_mda, root, sieve={"path": "{home}/active.sieve", "work_limit": "1M"})
    assert [r.code for r in deliver(server, [ALICE], large_message("small limit"))] == [DELIVERED]
    assert len(stored(maildir(root))) == 1
    assert work_limit_lines(server, script)

    config = tmp_path / "zero.yaml"
    config.write_text("listeners: [{protocol: lmtp, bind: '127.0.0.1:0'}]\ndomains: [a.test]\nsieve: {work_limit: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mda", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{config}:3: sieve.work_limit"), result.stderr
