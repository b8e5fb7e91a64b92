"""Parser and lexer: line-numbered errors and hostile input give a clean SieveError."""

from __future__ import annotations

import pytest

from mda.sieve.errors import SieveError
from mda.sieve.lexer import Kind, decode_script, tokenize
from mda.sieve.parser import MAX_NESTING, parse
from mda.sieve.syntax import StringArg


def test_strings_escapes_and_multiline() -> None:
    tokens = tokenize('"a\\"b\\\\c\\q" text: # note\r\nline\r\n..dot\r\n.\r\n', "t")
    assert [t.value for t in tokens[:2]] == ['a"b\\cq', "line\r\n.dot\r\n"]
    assert tokens[-1].kind is Kind.END


def test_numbers_with_quantifiers() -> None:
    assert [t.value for t in tokenize("1 2K 3m 4G", "t")[:4]] == [1, 2048, 3 << 20, 4 << 30]


def test_comments_are_skipped_and_lines_counted() -> None:
    commands = parse("# one\n/* two\nthree */\nkeep;\n", "t")
    assert commands[0].name == "keep"
    assert commands[0].line == 4


def test_string_list_is_marked() -> None:
    (cmd,) = parse('require ["a", "b"];', "t")
    assert cmd.args == (StringArg(("a", "b"), True, 1),)


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ("keep;\nif true {\n  keep\n}\n", 4, "expected ';'"),
        ('keep;\n"unterminated\n\n', 2, "unterminated string"),
        ("keep;\n/* never closed\n", 2, "unterminated comment"),
        ("keep;\nfileinto text:\nabc\n", 2, "unterminated multi-line string"),
        ("keep;\n\nkeep; }", 3, "expected a command"),
        ("keep;\nif true { keep;", 2, "expected '}'"),
        ('keep;\nrequire ["a" "b"];', 2, "expected ',' or ']'"),
        ("keep;\n@", 2, "unexpected character"),
        ("keep;\nsize :over 99999999999999999999G;", 2, "too large"),
        ("keep;\n\0", 2, "NUL"),
    ],
)
def test_syntax_errors_name_file_and_line(script: str, line: int, fragment: str) -> None:
    with pytest.raises(SieveError) as info:
        parse(script, "user.sieve")
    assert info.value.line == line
    assert info.value.file == "user.sieve"
    assert str(info.value).startswith(f"user.sieve:{line}: ")
    assert fragment in info.value.message


def test_deep_nesting_is_refused() -> None:
    script = "if true {" * (MAX_NESTING + 1) + "}" * (MAX_NESTING + 1)
    with pytest.raises(SieveError, match="nested deeper"):
        parse(script, "t")


def test_deep_test_nesting_is_refused() -> None:
    script = "if " + "not " * 100_000 + "true { keep; }"
    with pytest.raises(SieveError, match="nested deeper"):
        parse(script, "t")


def test_invalid_utf8_names_its_line() -> None:
    with pytest.raises(SieveError) as info:
        decode_script(b'keep;\nfileinto "\xff";\n', "bad.sieve")
    assert str(info.value) == "bad.sieve:2: script is not valid UTF-8"


def test_huge_string_is_refused_quickly() -> None:
    with pytest.raises(SieveError, match="longer than"):
        tokenize('"' + "\\a" * 2_000_000 + '"', "t")
