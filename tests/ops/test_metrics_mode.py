"""``prometheus_client`` learns its multiprocess directory before its first import, by the import structure.

That package picks how it stores values (in memory, or in files every worker shares) once, as it is
imported. ``mda.serving`` sets the directory for ``workers: N`` and only then imports what imports the
package; these tests keep that order structural: one module imports ``prometheus_client``, the command
modules never load it at import time, and ``mda.serving`` reaches it only inside ``serve``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mda"
FOR_METRICS = {"mda.app", "mda.workers", "mda.metrics", "mda.server"}
"""The modules that import ``prometheus_client``, themselves or through ``mda.metrics``."""


def _module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is itself imported (not inside a function, not for type checking)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_metrics_module_imports_prometheus_client() -> None:
    importers = {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "prometheus_client" for name in _all_imports(path))
    }
    assert importers == {"mda/metrics.py"}


def test_serving_imports_the_metrics_users_only_once_the_mode_is_chosen() -> None:
    serving = PACKAGE / "serving.py"
    assert not _module_level_imports(serving) & FOR_METRICS
    assert {"mda.workers", "mda.app"} <= _all_imports(serving)
    assert not _module_level_imports(PACKAGE / "metricsdir.py") & FOR_METRICS


def test_the_commands_leave_prometheus_client_unimported() -> None:
    """``mda serve`` can still choose the mode once its configuration is loaded."""
    code = (
        "import sys, mda.cli, mda.serving\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'prometheus_client'))"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
