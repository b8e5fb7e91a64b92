"""The Sieve overhead benchmark (contrib/bench/sieve_overhead.py) runs end to end, briefly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "bench" / "sieve_overhead.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "stored", "medians"), [("typical", 400, 1), ("extended", 400, 1), ("both", 800, 2)]
)
def test_sieve_overhead_benchmark_runs(variant: str, stored: int, medians: int) -> None:
    """One short pair: every server delivers everything (the scripts compile, no rule matches the
    benchmark's messages) and a ratio is printed per script; ``extended`` uses :regex and :value rules,
    ``both`` runs both scripts against the same server without Sieve."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--pairs", "1", "--messages", "200", "--concurrency", "16", "--script", variant],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^sieve side stored {stored} messages in INBOX$", result.stdout, re.MULTILINE), result.stdout
    ratios = re.findall(r"^median ratio[a-z ]* (\d+\.\d+)", result.stdout, re.MULTILINE)
    assert len(ratios) == medians and all(float(r) > 0 for r in ratios), result.stdout
    # The server's own CPU per message, the reading a loaded machine moves least.
    cpu = re.findall(r"^median CPU ratio[a-z ]* (\d+\.\d+)", result.stdout, re.MULTILINE)
    assert len(cpu) == medians and all(float(r) > 0 for r in cpu), result.stdout


@pytest.mark.slow
def test_sieve_cost_benchmark_compares_checkouts() -> None:
    """contrib/bench/sieve_cost.py: in-process µs per delivery without Sieve and with both scripts, for
    the checkout given."""
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, str(repo / "contrib" / "bench" / "sieve_cost.py"), "--messages", "20", "--rounds", "2"]
    result = subprocess.run(
        [*command, "--checkout", str(repo), "--message", "real"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pattern = rf"^{re.escape(str(repo))}: none \d+ µs, typical \d+ µs, extended \d+ µs per message; Sieve adds "
    assert re.match(pattern, result.stdout), result.stdout


@pytest.mark.slow
def test_sieve_cost_benchmark_times_sieve_alone() -> None:
    """contrib/bench/sieve_cost.py --sieve-only: µs of compiling (cached) and running each script."""
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, str(repo / "contrib" / "bench" / "sieve_cost.py"), "--messages", "20", "--rounds", "2"]
    result = subprocess.run(
        [*command, "--checkout", str(repo), "--sieve-only"], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    pattern = (
        rf"^{re.escape(str(repo))}: Sieve \(compile_scripts and run\) typical \d+ µs, extended \d+ µs per message$"
    )
    assert re.match(pattern, result.stdout.strip()), result.stdout
