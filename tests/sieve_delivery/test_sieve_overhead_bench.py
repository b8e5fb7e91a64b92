"""The Sieve overhead benchmark (contrib/bench/sieve_overhead.py) runs end to end, briefly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "bench" / "sieve_overhead.py"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["typical", "extended"])
def test_sieve_overhead_benchmark_runs(variant: str) -> None:
    """One short pair: both servers deliver everything (the script compiles, no rule matches the
    benchmark's messages) and a ratio is printed; ``extended`` uses :regex and :value rules."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--pairs", "1", "--messages", "200", "--concurrency", "16", "--script", variant],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^sieve side stored 400 messages in INBOX$", result.stdout, re.MULTILINE), result.stdout
    ratio = re.search(r"^median ratio (\d+\.\d+)", result.stdout, re.MULTILINE)
    assert ratio is not None and float(ratio.group(1)) > 0, result.stdout
