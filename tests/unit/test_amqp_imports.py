"""The AMQP door's modules import one another in one direction only — type-only imports
(``if TYPE_CHECKING:``) included — and reach the broker only through the core: no
``LegacyState`` and nothing of storage (``test_layering.py`` checks that for every door)."""

from __future__ import annotations

import ast
from pathlib import Path

import bayou.gateways.amqp

PACKAGE = "bayou.gateways.amqp"
DIRECTORY = Path(bayou.gateways.amqp.__file__).parent


def imported(module: str) -> set[str]:
    """Every module ``module`` imports, wherever the import statement is."""
    tree = ast.parse((DIRECTORY / f"{module.rsplit('.', 1)[-1]}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def modules() -> list[str]:
    return [f"{PACKAGE}.{p.stem}" for p in sorted(DIRECTORY.glob("*.py")) if p.stem != "__init__"]


def test_the_door_has_no_import_cycle() -> None:
    names = modules()
    graph = {m: {i for i in imported(m) if i in names and i != m} for m in names}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in names:
        visit(module, [])


def test_the_door_sees_the_broker_only_through_the_core() -> None:
    for module in modules():
        for name in imported(module):
            assert not name.startswith("bayou.gateways.legacy_state"), module
            assert not name.startswith("bayou.storage"), f"{module} imports {name}"
