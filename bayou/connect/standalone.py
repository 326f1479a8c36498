"""``bayou connect run FILE.toml``: connectors from a TOML file, against any broker.

The file holds one table per connector, named by the table; its keys are Kafka Connect's
(dotted keys may be quoted or written as nested tables — both mean the same flat key)::

    [connectors.orders-in]
    "connector.class" = "file-source"
    path = "/data/orders"
    topic = "orders"
    format = "json"

    [connectors.orders-out]
    connector.class = "http-sink"
    topics = ["orders"]               # a list is Connect's comma-separated string
    http.url = "http://127.0.0.1:8000/hook"

A ``[[connectors]]`` array of tables with a ``name`` key works too.  Every connector runs in
this process with the same runtime as the broker's (progress in ``connect-{name}``, source
positions in ``_bayou_connect_offsets``), so stopping this process and starting it again —
or running the same connectors in the broker — continues where it stopped.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bayou.connect.api import ConfigError, ConnectorConfig


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load(path: Path) -> list[ConnectorConfig]:
    """The connectors of a TOML file; ``ConfigError`` says what is wrong with it."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    tables = doc.get("connectors")
    entries: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(tables, Mapping):
        for name, table in tables.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"{path}: connectors.{name} must be a table")
            entries.append((str(name), table))
    elif isinstance(tables, list):
        for i, table in enumerate(tables):
            if not isinstance(table, Mapping) or not table.get("name"):
                raise ConfigError(f"{path}: connectors[{i}] needs a name")
            entries.append((str(table["name"]), {k: v for k, v in table.items() if k != "name"}))
    if not entries:
        raise ConfigError(f"{path}: no connectors (a [connectors.NAME] table each)")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two connectors have the same name")
    return [ConnectorConfig.from_mapping(name, _flatten(table)) for name, table in entries]
