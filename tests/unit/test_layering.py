"""The doors reach the broker only through the core: no module under ``bayou/gateways/``
imports ``bayou.storage`` (not even the engine interface's types, which ``bayou.core.types``
re-exports) — type-only imports (``if TYPE_CHECKING:``), imports inside functions and
relative imports included.  See ``docs/design/architecture.md``."""

from __future__ import annotations

import ast
from pathlib import Path

import bayou.gateways

GATEWAYS = Path(bayou.gateways.__file__).parent
ROOT = GATEWAYS.parent.parent


def imported_modules(source: str, package: str) -> set[str]:
    """Every module (and ``module.name``) that ``source``, a module of ``package``, imports,
    wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the module's package
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def storage_imports(source: str, package: str) -> list[str]:
    return sorted(
        name
        for name in imported_modules(source, package)
        if name == "bayou.storage" or name.startswith("bayou.storage.")
    )


def test_the_check_sees_every_form_of_import() -> None:
    source = (
        "import bayou.storage.engine\n"
        "from bayou import storage\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from bayou.storage.metadata import TopicMeta\n"
        "def f() -> None:\n"
        "    from ...storage.cluster import BrokerAddress\n"
        "    from ..kafka import server\n"
    )
    found = storage_imports(source, "bayou.gateways.kafka")
    assert found == [
        "bayou.storage",
        "bayou.storage.cluster",
        "bayou.storage.cluster.BrokerAddress",
        "bayou.storage.engine",
        "bayou.storage.metadata",
        "bayou.storage.metadata.TopicMeta",
    ]
    assert storage_imports("from bayou.core.types import Buffer\n", "bayou.gateways") == []


def test_no_door_imports_storage() -> None:
    modules = sorted(GATEWAYS.rglob("*.py"))
    assert len(modules) > 50  # the walk found the doors
    offenders = {}
    for path in modules:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        found = storage_imports(path.read_text(), package)
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = found
    assert offenders == {}
