"""Pigeonhole's ``sieve-test`` as an oracle, and the shared action vocabulary both sides are put in.

A script either side refuses to compile is the answer ``["compile-error"]``.

``sieve-test`` refuses to run mail processes as root, so it runs as an unprivileged system user in a
temporary directory that user owns (it writes a compiled ``.svbin`` beside the script).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mda.sieve import Discard, FileInto, Keep, Notify, Outcome, Redirect, Reject, SieveEnvelope, Vacation

ORACLE_USER = "mdatest"
#: The local time zone of both sides (RFC 5260 date tests without ``:zone`` use it).
ORACLE_TZ = "UTC"
# Every run of sieve-test that got as far as running the script prints one of these (the dry-run action
# list, the executed result). Output without either is a failure of the oracle itself.
RESULT_MARKERS = ("Performed actions:", "final result:", "failed to compile sieve script")
#: What both sides answer for a script they refuse to compile (an unknown or misused extension).
COMPILE_ERROR = "compile-error"


def normalise_outcome(outcome: Outcome) -> list[str]:
    """mda's outcome in the shared vocabulary (see :func:`normalise_pigeonhole`)."""
    out: list[str] = []
    for action in outcome.actions:
        match action:
            case Keep(flags=flags):
                out.append("keep" + _flags(flags))
            case FileInto(folder=folder, flags=flags):
                name = "keep" if folder.upper() == "INBOX" else f"fileinto {folder}"
                out.append(name + _flags(flags))
            case Redirect(address=address, copy=copy):
                out.append(f"redirect {address.lower()}" + (" :copy" if copy else ""))
            case Reject(reason=reason):
                out.append(f"reject {_printable(reason)}")
            case Discard():
                out.append("discard")
            case Vacation():
                out.append("vacation")
            case Notify(recipients=recipients, importance=importance):
                out.append(f"notify importance={importance}" + "".join(f" {r.lower()}" for r in recipients))
    # duplicate (RFC 7352): Pigeonhole lists the IDs to track among the actions.
    out.extend("track duplicate" + (" :last" if seen.refresh else "") for seen in outcome.duplicates)
    if outcome.errors:
        out.append("error")
    return sorted(out)


def _printable(text: str) -> str:
    """``sieve-test`` prints control characters (the CRLF ending a ``text:`` reason) as ``?``."""
    return re.sub(r"[\x00-\x1f]", "?", text)


def _flags(flags: Sequence[str]) -> str:
    return " flags=" + " ".join(sorted(f.lower() for f in flags)) if flags else ""


def normalise_pigeonhole(printed: str) -> tuple[list[str], list[str], bool]:
    """Parse ``sieve-test`` (without ``-e``) output into the shared vocabulary.

    Returns the actions, the folders it stores into, and whether it asked for a vacation reply (whether
    one is really sent is only decided when the actions are executed, see :class:`Pigeonhole`).
    """
    if "final result: failed; resolved with successful implicit keep" in printed:
        return ["error", "keep"], [], False
    sections = printed.split("## Executing script:")
    actions: list[str] = []
    folders: list[str] = []
    vacation = False
    for index, section in enumerate(sections):
        last = index == len(sections) - 1
        explicit, _, implicit = section.partition("Implicit keep:")
        lines = explicit.splitlines() + (implicit.splitlines() if last else [])
        for line in lines:
            text = line.strip()
            if text.startswith("* "):
                item = text[2:]
                if item.startswith("store message in folder: "):
                    folder = item.removeprefix("store message in folder: ")
                    actions.append("keep" if folder.upper() == "INBOX" else f"fileinto {folder}")
                    if folder.upper() != "INBOX":
                        folders.append(folder)
                elif item == "keep":
                    actions.append("keep")
                elif item.startswith("redirect message to: "):
                    address = item.removeprefix("redirect message to: ").strip("<>").lower()
                    actions.append(f"redirect {address}")
                elif item.startswith("reject message with reason: "):
                    actions.append("reject " + item.removeprefix("reject message with reason: "))
                elif item == "discard":
                    actions.append("discard")
                elif item.startswith("send notification with method"):
                    actions.append("notify")
                elif item.startswith(("track duplicate", "track last duplicate")):
                    actions.append("track duplicate" + (" :last" if item.startswith("track last") else ""))
                elif item.startswith("send vacation message"):
                    vacation = True
                else:
                    actions.append(f"unknown {item}")
            elif text.startswith("=> importance") and actions and actions[-1].startswith("notify"):
                actions[-1] += " importance=" + text.partition(":")[2].strip()
            elif text.startswith(("+ To: ", "+ Cc: ")) and actions and actions[-1].startswith("notify"):
                actions[-1] += " " + text[2:].partition(":")[2].strip().lower()
            elif text.startswith("+ add IMAP flags: ") and actions:
                flags = text.removeprefix("+ add IMAP flags: ").lower().split()
                actions[-1] += " flags=" + " ".join(sorted(flags))
            elif text == "+ preserve implicit keep" and actions:
                actions[-1] += " :copy"
    if any(a.startswith(("keep", "fileinto", "redirect")) for a in actions):
        actions = [a for a in actions if a != "discard"]
    return _merge_stores(actions), folders, vacation


def _merge_stores(actions: list[str]) -> list[str]:
    """Stores into one folder from several scripts of a sequence are listed once per script, but
    executed as one store with all their flags (checked with ``sieve-test -e``); ``:copy`` on
    ``fileinto`` only says the implicit keep stays, which the list already shows."""
    stores: dict[str, set[str]] = {}
    others: list[str] = []
    for action in actions:
        if action.startswith(("keep", "fileinto")):
            target, _, flags = action.removesuffix(" :copy").partition(" flags=")
            stores.setdefault(target, set()).update(flags.split())
        else:
            others.append(action)
    merged = [t + (" flags=" + " ".join(sorted(f)) if f else "") for t, f in stores.items()]
    return sorted(set(merged + others))


@dataclass
class Pigeonhole:
    """Runs Pigeonhole's ``sieve-test`` as :data:`ORACLE_USER` in a private directory."""

    workdir: Path
    uid: int
    gid: int
    sieve_test: str

    def _run(self, args: list[str], home: Path) -> str:
        shutil.chown(self.workdir, self.uid, self.gid)
        for path in self.workdir.rglob("*"):
            os.chown(path, self.uid, self.gid)
        proc = subprocess.run(
            ["runuser", "-u", ORACLE_USER, "--", "env", f"HOME={home}", f"TZ={ORACLE_TZ}", self.sieve_test, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
            check=False,
        )
        printed = proc.stdout + proc.stderr
        if not any(marker in printed for marker in RESULT_MARKERS):
            # Not an answer at all (a missing program, a refused user, a crash): never read it as
            # "no actions".
            raise AssertionError(f"sieve-test gave no result (exit {proc.returncode}): {args}\n{printed}")
        return printed

    def actions(
        self,
        scripts: Sequence[Path],
        message: Path,
        envelope: SieveEnvelope,
        options: Mapping[str, str] | None = None,
        includes: Path | None = None,
    ) -> list[str]:
        """The normalised actions Pigeonhole takes for ``scripts`` (before scripts first, user's last);
        ``options`` are Pigeonhole settings (``sieve_spamtest_status_header``…) given with ``-o``;
        ``includes`` holds ``personal/`` and ``global/`` scripts for ``include`` (RFC 6609)."""
        copies = []
        for i, script in enumerate(scripts):
            copy = self.workdir / f"s{i}_{script.name}"
            shutil.copyfile(script, copy)
            copies.append(copy)
        eml = self.workdir / "message.eml"
        shutil.copyfile(message, eml)
        common = [
            "-C",
            "-o",
            "recipient_delimiter=+",
            "-f",
            envelope.sender,
            "-r",
            envelope.recipient,
            "-a",
            envelope.original_recipient or envelope.recipient,
        ]
        # Extensions Pigeonhole ships disabled; mda offers them.
        # Sieve settings are plugin settings for sieve-test's -o.
        common += ["-o", "plugin/sieve_extensions=+vacation-seconds +spamtest +spamtestplus +virustest +editheader"]
        for key, value in (options or {}).items():
            common += ["-o", f"plugin/{key}={value}"]
        if includes is not None and "include" in scripts[-1].read_text():
            for kind in ("personal", "global"):
                shutil.copytree(includes / kind, self.workdir / kind, dirs_exist_ok=True)
            common += ["-o", f"plugin/sieve=file:{self.workdir / 'personal'}"]
            common += ["-o", f"plugin/sieve_global={self.workdir / 'global'}"]
        for before in copies[:-1]:
            # sieve-test 0.5.19 prepends the working directory to an absolute -s path: pass it relative.
            common += ["-s", before.name]
        home = self.workdir / "home"
        printed = self._run([*common, str(copies[-1]), str(eml)], home)
        if "failed to compile sieve script" in printed:
            return [COMPILE_ERROR]
        if "Fatal" in printed and "final result" not in printed:
            raise AssertionError(f"sieve-test failed:\n{printed}")
        actions, folders, vacation = normalise_pigeonhole(printed)
        if vacation:
            # The reply rules (RFC 5230 §4.5) are applied when actions execute: run again with -e into
            # a fresh Maildir where every folder the script stores into exists.
            shutil.rmtree(home, ignore_errors=True)
            maildir = home / "Maildir"
            for folder in ["", *(f".{f}" for f in folders)]:
                for sub in ("cur", "new", "tmp"):
                    (maildir / folder / sub).mkdir(parents=True, exist_ok=True)
            executed = self._run(["-e", "-l", f"maildir:{maildir}", *common, str(copies[-1]), str(eml)], home)
            if "vacation action: sent vacation response" in executed:
                actions = sorted([*actions, "vacation"])
        return actions
