"""``spamtest``, ``spamtestplus`` and ``virustest`` (RFC 5235): a message's score as a number to compare.

The site's filter (SpamAssassin, rspamd, ClamAV…) leaves its verdict in a header field; the
``sieve: spamtest:``/``virustest:`` settings say which field and how to read it, with Pigeonhole's
``sieve_spamtest_*`` semantics: the status (a decimal score, the length of a run of ``*``, or one of
configured texts) is divided by the maximum and scaled to ``1``…``10`` (virustest ``1``…``5``,
``:percent`` ``0``…``100``); ``"0"`` means not tested: no setting, no such field, or a value that does
not parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ext_regex import compile_pattern
from .settings import HeaderSpec, ScoreTest, parse_decimal

if TYPE_CHECKING:
    from .compiler import Test
    from .interpreter import _Run
    from .message import SieveMessage


def _read(message: SieveMessage, spec: HeaderSpec) -> str | None:
    """The first ``spec.field`` of the message, through ``spec.regex``'s first group if there is one."""
    values = message.header_values(spec.field)
    if not values:
        return None
    if spec.regex is None:
        return values[0]
    m = compile_pattern(spec.regex, False).search(values[0])
    if m is None or m.group(1) is None:
        return None
    text: str = m.group(1)
    return text


def _strlen(text: str) -> float | None:
    """``*****`` is 5; a run of one repeated character, or nothing at all (0)."""
    if text and text.strip(text[0]):
        return None
    return float(len(text))


def ratio(config: ScoreTest, message: SieveMessage, virus: bool) -> float | None:
    """The score as a fraction of the maximum, 0 to 1; None when the message was not tested."""
    if config.status_type == "text":
        maximum: float | None = 5.0 if virus else 10.0
    elif config.max_header is not None:
        text = _read(message, config.max_header)
        maximum = parse_decimal(text) if text is not None else None
    else:
        maximum = config.max_value
    if not maximum:
        return None
    status = _read(message, config.status_header)
    if status is None:
        return None
    if config.status_type == "score":
        value = parse_decimal(status)
    elif config.status_type == "strlen":
        value = _strlen(status)
    else:
        value = next((float(i) for i, text in enumerate(config.text_values) if text and text == status), None)
    if value is None:
        return None
    return min(max(value, 0.0) / maximum, 1.0)


def score(config: ScoreTest | None, message: SieveMessage, virus: bool, percent: bool) -> str:
    """The value the test compares (RFC 5235 §3.1-3.3)."""
    fraction = None if config is None else ratio(config, message, virus)
    if fraction is None:
        return "0"
    if percent:
        return str(int(fraction * 100 + 0.001))
    return str(int(fraction * (4 if virus else 9) + 1.001))


def test_spamtest(run: _Run, test: Test) -> bool:
    virus = test.name == "virustest"
    settings = run.ctx.settings
    value = score(settings.virustest if virus else settings.spamtest, run.ctx.message, virus, "percent" in test.tags)
    return run.matches(test, [value], run.expand_all(test.args[0], test.line))
