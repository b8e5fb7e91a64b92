"""``environment`` (RFC 5183): what a script may ask about where it runs.

``location`` is ``MDA`` and ``phase`` ``during`` (mda runs scripts at final delivery), ``name`` and
``version`` are mda's, ``host`` and ``domain`` come from the configuration. An item mda does not know
(``remote-ip`` among them: scripts run after the session) makes the test false, as in Pigeonhole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mda import __version__

if TYPE_CHECKING:
    from .compiler import Test
    from .interpreter import _Run

FIXED = {"location": "MDA", "phase": "during", "name": "mda", "version": __version__}


def test_environment(run: _Run, test: Test) -> bool:
    name = run.expand(test.args[0], test.line).lower()
    value = run.ctx.settings.environment.get(name, FIXED.get(name))
    if value is None:
        return False
    return run.matches(test, [value], run.expand_all(test.args[1], test.line))
