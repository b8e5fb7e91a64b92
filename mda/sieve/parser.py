"""Recursive-descent parser for the grammar of RFC 5228 §8.2.

Nesting of blocks and tests is bounded (:data:`MAX_NESTING`) so that a hostile script cannot exhaust the
Python stack, and string lists are bounded (:data:`MAX_LIST`) so that no loop in the interpreter grows
without limit.
"""

from __future__ import annotations

from .errors import SieveError
from .lexer import Kind, Token, tokenize
from .syntax import Argument, CommandNode, NumberArg, StringArg, TagArg, TestNode

#: Deepest nesting of blocks or of tests: far beyond any real filter, far below the Python stack limit.
MAX_NESTING = 32
#: Most strings in one string list and most tests in one test list.
MAX_LIST = 1024


class _Parser:
    def __init__(self, tokens: list[Token], name: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.name = name

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind is not Kind.END:
            self.pos += 1
        return tok

    def error(self, tok: Token, message: str) -> SieveError:
        return SieveError(self.name, tok.line, message)

    def expect_punct(self, char: str) -> Token:
        tok = self.take()
        if tok.kind is not Kind.PUNCT or tok.value != char:
            raise self.error(tok, f"expected '{char}' but found {_describe(tok)}")
        return tok

    def is_punct(self, char: str) -> bool:
        tok = self.peek()
        return tok.kind is Kind.PUNCT and tok.value == char

    def commands(self, depth: int) -> tuple[CommandNode, ...]:
        out: list[CommandNode] = []
        while self.peek().kind is Kind.IDENTIFIER:
            out.append(self.command(depth))
        return tuple(out)

    def command(self, depth: int) -> CommandNode:
        ident = self.take()
        args, tests = self.arguments(depth)
        block: tuple[CommandNode, ...] | None = None
        if self.is_punct("{"):
            if depth >= MAX_NESTING:
                raise self.error(self.peek(), f"blocks nested deeper than {MAX_NESTING} levels")
            self.take()
            block = self.commands(depth + 1)
            self.expect_punct("}")
        else:
            tok = self.take()
            if tok.kind is not Kind.PUNCT or tok.value != ";":
                raise self.error(tok, f"expected ';' or '{{' after command '{ident.value}' but found {_describe(tok)}")
        return CommandNode(str(ident.value), args, tests, block, ident.line)

    def arguments(self, depth: int) -> tuple[tuple[Argument, ...], tuple[TestNode, ...]]:
        args: list[Argument] = []
        while True:
            tok = self.peek()
            if tok.kind is Kind.TAG:
                self.take()
                args.append(TagArg(str(tok.value), tok.line))
            elif tok.kind is Kind.NUMBER:
                self.take()
                args.append(NumberArg(int(tok.value), tok.line))
            elif tok.kind is Kind.STRING:
                self.take()
                args.append(StringArg((str(tok.value),), False, tok.line))
            elif self.is_punct("["):
                args.append(self.string_list())
            else:
                break
            if len(args) > MAX_LIST:
                raise self.error(tok, "too many arguments")
        tests: tuple[TestNode, ...] = ()
        if self.peek().kind is Kind.IDENTIFIER:
            tests = (self.test(depth + 1),)
        elif self.is_punct("("):
            tests = self.test_list(depth + 1)
        return tuple(args), tests

    def string_list(self) -> StringArg:
        start = self.take()
        values: list[str] = []
        while True:
            tok = self.take()
            if tok.kind is not Kind.STRING:
                raise self.error(tok, f"expected a string in string list but found {_describe(tok)}")
            values.append(str(tok.value))
            if len(values) > MAX_LIST:
                raise self.error(tok, f"string list longer than {MAX_LIST} items")
            sep = self.take()
            if sep.kind is Kind.PUNCT and sep.value == "]":
                return StringArg(tuple(values), True, start.line)
            if sep.kind is not Kind.PUNCT or sep.value != ",":
                raise self.error(sep, f"expected ',' or ']' in string list but found {_describe(sep)}")

    def test(self, depth: int) -> TestNode:
        tok = self.take()
        if tok.kind is not Kind.IDENTIFIER:
            raise self.error(tok, f"expected a test but found {_describe(tok)}")
        if depth > MAX_NESTING:
            raise self.error(tok, f"tests nested deeper than {MAX_NESTING} levels")
        args, tests = self.arguments(depth)
        return TestNode(str(tok.value), args, tests, tok.line)

    def test_list(self, depth: int) -> tuple[TestNode, ...]:
        self.expect_punct("(")
        tests = [self.test(depth)]
        while self.is_punct(","):
            self.take()
            tests.append(self.test(depth))
            if len(tests) > MAX_LIST:
                raise self.error(self.peek(), f"test list longer than {MAX_LIST} items")
        self.expect_punct(")")
        return tuple(tests)


def _describe(tok: Token) -> str:
    if tok.kind is Kind.END:
        return "end of script"
    if tok.kind is Kind.STRING:
        return "a string"
    return f"{tok.kind.value} '{tok.value}'"


def parse(text: str, name: str) -> tuple[CommandNode, ...]:
    """Parse script text into commands; raises :class:`SieveError` with the offending line."""
    parser = _Parser(tokenize(text, name), name)
    commands = parser.commands(0)
    tok = parser.peek()
    if tok.kind is not Kind.END:
        raise parser.error(tok, f"expected a command but found {_describe(tok)}")
    return commands
