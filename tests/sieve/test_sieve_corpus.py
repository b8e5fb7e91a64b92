"""The corpus: every script/message pair gives the same actions in mda and in Pigeonhole.

``NAME.json`` holds the envelope, optional ``before`` scripts (``corpus/before/``) run first as
``sieve_before`` scripts, and ``expect``: Pigeonhole's answer recorded from ``sieve-test``, so that the
corpus also checks mda where Pigeonhole is not installed or the tests do not run as root.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sieve_oracle import COMPILE_ERROR, Pigeonhole, normalise_outcome

from mda.sieve import HeaderSpec, ScoreTest, SieveEnvelope, SieveError, SieveSettings, compile_file, run
from mda.sieve.settings import parse_decimal

CORPUS = Path(__file__).parent / "corpus"
#: Scripts the cases include: ``personal/`` (beside the user's script) and ``global/`` (sieve.global_dir).
INCLUDES = CORPUS / "include"
CASES = sorted(p.stem for p in CORPUS.glob("*.sieve"))
#: Fixed clock: vacation decisions must not depend on the time the tests run.
NOW = 1_800_000_000.0


def load(name: str) -> tuple[list[Path], Path, SieveEnvelope, list[str]]:
    meta = metadata(name)
    scripts = [CORPUS / "before" / f"{b}.sieve" for b in meta.get("before", [])]
    envelope = SieveEnvelope(meta["sender"], meta["recipient"], meta.get("original_recipient"))
    return [*scripts, CORPUS / f"{name}.sieve"], CORPUS / f"{name}.eml", envelope, meta["expect"]


def metadata(name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((CORPUS / f"{name}.json").read_text())
    return meta


def mda_actions(
    scripts: list[Path], message: Path, envelope: SieveEnvelope, options: Mapping[str, str] | None = None
) -> list[str]:
    settings = settings_for(options or {})
    with tempfile.TemporaryDirectory(prefix="mda-sieve-include-") as personal:
        if "include" in scripts[-1].read_text():
            # :personal scripts sit beside the user's script: run a copy of it among corpus/include/personal.
            shutil.copytree(INCLUDES / "personal", personal, dirs_exist_ok=True)
            scripts = [*scripts[:-1], Path(shutil.copy(scripts[-1], personal))]
        try:
            compiled = [compile_file(s, settings.global_dir) for s in scripts]
        except SieveError:
            return [COMPILE_ERROR]
        outcome = run(compiled, message.read_bytes(), envelope, now=NOW, settings=settings)
    return normalise_outcome(outcome)


def settings_for(options: Mapping[str, str]) -> SieveSettings:
    """mda's settings equal to Pigeonhole's ``sieve_spamtest_*``/``sieve_virustest_*`` ``options``."""

    def score_test(name: str) -> ScoreTest | None:
        header = options.get(f"sieve_{name}_status_header")
        if header is None:
            return None
        max_header = options.get(f"sieve_{name}_max_header")
        max_value = options.get(f"sieve_{name}_max_value")
        return ScoreTest(
            HeaderSpec.parse(header),
            options.get(f"sieve_{name}_status_type", "score"),
            HeaderSpec.parse(max_header) if max_header else None,
            parse_decimal(max_value) if max_value else None,
            tuple(options.get(f"sieve_{name}_text_value{i}", "") for i in range(11)),
        )

    return SieveSettings(
        spamtest=score_test("spamtest"), virustest=score_test("virustest"), global_dir=INCLUDES / "global"
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", CASES)
def test_corpus_matches_recorded_pigeonhole(name: str) -> None:
    scripts, message, envelope, expect = load(name)
    assert mda_actions(scripts, message, envelope, metadata(name).get("options")) == expect


@pytest.mark.root
@pytest.mark.parametrize("name", CASES)
def test_corpus_matches_live_pigeonhole(name: str, pigeonhole: Pigeonhole) -> None:
    scripts, message, envelope, expect = load(name)
    options = metadata(name).get("options")
    oracle = pigeonhole.actions(scripts, message, envelope, options, INCLUDES)
    assert oracle == expect, "recorded expectation is stale"
    assert mda_actions(scripts, message, envelope, options) == oracle


@pytest.mark.root
def test_an_oracle_that_cannot_run_fails_instead_of_answering_no_actions(pigeonhole: Pigeonhole) -> None:
    scripts, message, envelope, _ = load(CASES[0])
    broken = Pigeonhole(pigeonhole.workdir, pigeonhole.uid, pigeonhole.gid, "/nonexistent/sieve-test")
    with pytest.raises(AssertionError, match="sieve-test gave no result"):
        broken.actions(scripts, message, envelope)
