"""The import rules of docs/architecture.md ("Parts"), checked on the source.

Imports go downwards only: the leaf modules import nothing above them, storage never reports through
metrics or logs, and no two modules import each other (at import time, or late inside a function).
Imports under ``if TYPE_CHECKING:`` are for annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mda"

LEAVES = {
    "addresses",
    "aliases",
    "config",
    "enums",
    "identity",
    "logs",
    "replies",
    "spool",
    "trace",
    "units",
    "userdb.settings",
    "statestore.settings",
    "sieve.settings",
    "sieve.ext_regex",
    "sieve.budget",
    "yamlsource",
    "workpool",
}
"""Modules (besides ``mda.storage``) that import only other leaves and storage's own modules.
``userdb.settings`` and ``statestore.settings`` are the configuration schemas of ``userdb:`` and ``state:``,
read by ``config``: part of that layer."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, package: str) -> set[str]:
    """The ``mda`` modules a module imports, at module level or inside functions, not for type checking."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "mda")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "mda":
                found.add(module)
                for alias in node.names:  # ``from mda import delivery`` imports the module mda.delivery
                    candidate = f"{module}.{alias.name}"
                    if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists():
                        found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard("mda")
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(ast.parse(path.read_text()), package)
    return graph


GRAPH = _graph()


def _short(module: str) -> str:
    return module.removeprefix("mda.")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _short(m) in LEAVES or m.startswith("mda.storage")))
def test_leaf_modules_import_nothing_above_them(module: str) -> None:
    above = {
        imported
        for imported in GRAPH[module]
        if not (_short(imported) in LEAVES or imported.startswith("mda.storage") or imported == "mda.__version__")
    }
    assert not above, f"{module} imports {sorted(above)}, above it in docs/architecture.md"


def test_storage_reports_through_results_not_metrics_or_logs() -> None:
    for module, imported in GRAPH.items():
        if module.startswith("mda.storage"):
            assert not imported & {"mda.metrics", "mda.logs"}, module


def test_only_the_commands_and_the_supervisor_import_the_application() -> None:
    importers = {module for module, imported in GRAPH.items() if "mda.app" in imported}
    assert importers <= {"mda.serving", "mda.workers"}
    assert not any("mda.cli" in imported for module, imported in GRAPH.items() if module != "mda.__main__")


KNOWN_CYCLES: list[list[str]] = []
"""Cycles left to break (none today)."""


RECURSIVE_BY_DESIGN = {"mda.sieve.ext_include", "mda.sieve.ext_mime"}
"""Sieve's ``include`` compiles and runs another script while its includer compiles or runs (RFC 6609),
and ``foreverypart`` runs its block once per MIME part (RFC 5703): the compiler, engine and interpreter
reach each other through them, late, by design."""


def test_no_import_cycle() -> None:
    """Two modules importing each other (even late, inside a function) is a cycle to break, e.g. by
    giving the shared types a module of their own as ``mda/transaction.py`` does."""
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        for imported in sorted(GRAPH.get(module, ())):
            if imported == path[0]:
                cycles.append([*path, imported])
            elif imported not in path and imported > path[0]:
                walk(imported, [*path, imported])

    for start in sorted(GRAPH):
        walk(start, [start])
    new = [cycle for cycle in cycles if cycle not in KNOWN_CYCLES and not RECURSIVE_BY_DESIGN & set(cycle)]
    assert not new, "\n".join(" -> ".join(cycle) for cycle in new)
