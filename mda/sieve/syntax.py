"""Syntax tree of a Sieve script, as RFC 5228 §8.2 draws it: commands with arguments, tests and blocks.

The tree carries no meaning yet; :mod:`mda.sieve.compiler` checks it against the command table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StringArg:
    """A string or a string list; ``is_list`` tells ``"a"`` from ``["a"]`` (RFC 5228 §2.4.2.1)."""

    values: tuple[str, ...]
    is_list: bool
    line: int


@dataclass(frozen=True, slots=True)
class TagArg:
    name: str
    line: int


@dataclass(frozen=True, slots=True)
class NumberArg:
    value: int
    line: int


Argument = StringArg | TagArg | NumberArg


@dataclass(frozen=True, slots=True)
class TestNode:
    name: str
    args: tuple[Argument, ...]
    tests: tuple[TestNode, ...]
    line: int


@dataclass(frozen=True, slots=True)
class CommandNode:
    name: str
    args: tuple[Argument, ...]
    tests: tuple[TestNode, ...]
    block: tuple[CommandNode, ...] | None
    line: int
