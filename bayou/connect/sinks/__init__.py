"""Sink connectors: Parquet files, Iceberg tables, DuckDB databases (see docs/design/connect.md)."""
