"""Record Pigeonhole's answer for corpus cases: ``python tests/sieve/record_corpus.py NAME...`` (as root).

Writes ``expect`` into each ``NAME.json`` from a live ``sieve-test`` run and prints mda's answer beside
it; the recorded answer is what ``test_sieve_corpus.py`` then checks, with or without the oracle.
"""

from __future__ import annotations

import json
import pwd
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

from sieve_oracle import ORACLE_USER, Pigeonhole  # noqa: E402
from test_sieve_corpus import CORPUS, INCLUDES, load, mda_actions  # noqa: E402

from tests.peers import programs  # noqa: E402


def main(names: list[str]) -> int:
    programs.ensure_system_user(ORACLE_USER)
    user = pwd.getpwnam(ORACLE_USER)
    differ = 0
    for name in names:
        meta_path = CORPUS / f"{name}.json"
        meta = json.loads(meta_path.read_text())
        meta.setdefault("expect", [])
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        scripts, message, envelope, _ = load(name)
        with tempfile.TemporaryDirectory(prefix="mda-sieve-") as tmp:
            oracle = Pigeonhole(Path(tmp), user.pw_uid, user.pw_gid, programs.require(programs.SIEVE_TEST))
            expect = oracle.actions(scripts, message, envelope, meta.get("options", {}), INCLUDES)
        meta["expect"] = expect
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        try:
            mine = mda_actions(scripts, message, envelope, meta.get("options", {}))
        except Exception as exc:  # report and go on: this is a recording tool
            mine = [f"{type(exc).__name__}: {exc}"]
        same = mine == expect
        differ += not same
        print(f"{'ok  ' if same else 'DIFF'} {name}: pigeonhole={expect} mda={mine}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main([Path(a).stem for a in sys.argv[1:]]))
