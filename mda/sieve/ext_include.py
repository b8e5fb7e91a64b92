"""``include`` (RFC 6609): scripts that run other scripts, ``return``, and ``global`` variables.

Where scripts are found: ``:personal`` (the default) names ``NAME.sieve`` in the directory of the user's
script (the top of the include chain), ``:global`` in ``sieve.global_dir``. An included script has its
own ``require`` and its own variables, except those both sides declare ``global`` (or read as
``${global.NAME}``); its actions join the including script's, and ``stop`` in it ends everything, while
``return`` ends only it. ``:once`` skips a script already included in this delivery, ``:optional`` a
script that does not exist.

A script naming an included script that does not exist (without ``:optional``), or including itself
through any chain, does not compile; the check is repeated on every use, so a script added later is
found without touching the one that includes it. Limits are Pigeonhole's defaults: nesting 10 deep,
255 includes per delivery.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SieveError

if TYPE_CHECKING:
    from .compiler import Command, Node, Script
    from .interpreter import _Run

MAX_NESTING = 10
MAX_INCLUDES = 255
_SCRIPT_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")


class Return(Exception):
    """``return`` (RFC 6609 §3.4): ends the current (included) script."""


@dataclass
class IncludeState:
    """Shared by a top-level script and everything it includes."""

    globals: dict[str, str] = field(default_factory=dict)
    once: set[Path] = field(default_factory=set)
    count: int = 0


class Scope(dict[str, str]):
    """A script's variables where the names declared ``global`` (and ``global.NAME``) live in the
    shared dictionary (RFC 6609 §3.5)."""

    __slots__ = ("names", "shared")

    def __init__(self, shared: dict[str, str]) -> None:
        super().__init__()
        self.shared = shared
        self.names: set[str] = set()

    def _global(self, key: str) -> str | None:
        if key.startswith("global."):
            return key[7:]
        return key if key in self.names else None

    def get(self, key: str, default: Any = None) -> Any:
        name = self._global(key)
        return super().get(key, default) if name is None else self.shared.get(name, default)

    def __setitem__(self, key: str, value: str) -> None:
        name = self._global(key)
        if name is None:
            super().__setitem__(key, value)
        else:
            self.shared[name] = value

    def __contains__(self, key: object) -> bool:
        name = self._global(key) if isinstance(key, str) else None
        return super().__contains__(key) if name is None else name in self.shared


def valid_name(name: str) -> bool:
    return _SCRIPT_NAME.fullmatch(name) is not None and name not in (".", "..")


def script_path(directory: Path | None, name: str) -> Path | None:
    """``NAME.sieve`` in ``directory``; None when there is no such directory or the name is unsafe."""
    if directory is None or not valid_name(name):
        return None
    return directory / f"{name}.sieve"


def attach(run: _Run, state: IncludeState | None = None) -> None:
    """Give a script that uses ``include`` its share of ``state`` (a new one at the top of a chain)."""
    run.include = state if state is not None else IncludeState()
    run.variables = Scope(run.include.globals)


def do_global(run: _Run, cmd: Command) -> None:
    assert isinstance(run.variables, Scope)
    for name in run.expand_all(cmd.args[0], cmd.line):
        run.variables.names.add(name.lower())


def do_return(run: _Run, cmd: Command) -> None:
    raise Return


def do_include(run: _Run, cmd: Command) -> None:
    """Run the included script with this run's result; ``stop`` inside propagates, ``return`` ends it."""
    from .engine import compile_cached
    from .interpreter import _Run as Runner

    state = run.include
    assert state is not None
    name = run.expand(cmd.args[0], cmd.line)
    if run.personal_dir is None:
        run.personal_dir = Path(run.script.name).parent
    directory = run.ctx.settings.global_dir if cmd.tags.get("location") == "global" else run.personal_dir
    path = script_path(directory, name)
    if path is None or not path.is_file():
        if "optional" in cmd.tags:
            return
        raise run.error(cmd.line, f"included script '{name}' not found")
    if "once" in cmd.tags and path in state.once:
        return
    state.once.add(path)
    state.count += 1
    if state.count > MAX_INCLUDES:
        raise run.error(cmd.line, f"more than {MAX_INCLUDES} included scripts")
    if run.depth >= MAX_NESTING:
        raise run.error(cmd.line, f"includes nested deeper than {MAX_NESTING} levels")
    try:
        script = compile_cached(path)
    except SieveError as exc:
        raise run.error(cmd.line, f"included script does not compile: {exc}") from None
    child = Runner(script, run.ctx)
    child.depth = run.depth + 1
    child.personal_dir = run.personal_dir
    attach(child, state)
    child.flags = run.flags  # the imap4flags internal variable is one for the whole chain, as in Pigeonhole
    try:
        for step in script.program:
            step(child)
    except Return:
        pass
    finally:
        run.flags = child.flags


def _includes(body: tuple[Node, ...]) -> Iterator[Command]:
    from .compiler import If

    for node in body:
        if isinstance(node, If):
            for branch in node.branches:
                yield from _includes(branch.block)
        elif node.name == "include":
            yield node


def link(script: Script, personal: Path, global_dir: Path | None, stack: tuple[Path, ...] = ()) -> None:
    """Check, when compiling, that every included script with a constant name exists (or is
    ``:optional``), compiles, and does not include itself; raises :class:`SieveError`."""
    from .engine import compile_cached

    if "include" not in script.extensions:
        return
    for cmd in _includes(script.body):
        name = cmd.args[0]
        if not isinstance(name, str):
            continue  # named by a variable: resolved when it runs
        directory = global_dir if cmd.tags.get("location") == "global" else personal
        path = script_path(directory, name)
        if path is None or not path.is_file():
            if "optional" in cmd.tags:
                continue
            where = "the global script directory" if directory is global_dir else str(personal)
            raise SieveError(script.name, cmd.line, f"included script '{name}' not found in {where}")
        path = path.resolve()
        if path in stack:
            raise SieveError(script.name, cmd.line, f"script '{name}' includes itself")
        if len(stack) >= MAX_NESTING:
            raise SieveError(script.name, cmd.line, f"includes nested deeper than {MAX_NESTING} levels")
        link(compile_cached(path), personal, global_dir, (*stack, path))
