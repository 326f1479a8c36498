"""Connector class names → the task classes implementing them (imported on first use, so a
broker that runs no Iceberg connector never imports pyiceberg)."""

from __future__ import annotations

import importlib

from bayou.connect.api import ConfigError, SinkTask, SourceTask

CONNECTOR_CLASSES: dict[str, str] = {
    "parquet-sink": "bayou.connect.sinks.parquet:ParquetSinkTask",
    "iceberg-sink": "bayou.connect.sinks.iceberg:IcebergSinkTask",
    "postgres-sink": "bayou.connect.sinks.postgres:PostgresSinkTask",
    "duckdb-sink": "bayou.connect.sinks.duckdb:DuckDbSinkTask",
    "http-sink": "bayou.connect.sinks.http:HttpSinkTask",
    "postgres-cdc-source": "bayou.connect.sources.postgres_cdc:PostgresCdcSourceTask",
    "file-source": "bayou.connect.sources.files:FileSourceTask",
}


def task_class(name: str) -> type[SinkTask] | type[SourceTask]:
    """The task class for ``connector.class`` = ``name``; ``ConfigError`` when unknown.

    Beside the names above, ``package.module:ClassName`` names a task class of one's own."""
    target = CONNECTOR_CLASSES.get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        known = ", ".join(sorted(CONNECTOR_CLASSES))
        raise ConfigError(f"unknown connector.class {name!r} (known: {known})")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, SinkTask | SourceTask)):
        raise ConfigError(f"{target} is not a SinkTask or SourceTask")
    return cls


def is_sink(name: str) -> bool:
    if ":" in name:
        return issubclass(task_class(name), SinkTask)
    return name.endswith("-sink")
