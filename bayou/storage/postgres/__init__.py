"""The PostgreSQL storage engine (``postgres://user@host:port/db``): topics, record batches,
offsets and all internal state in one PostgreSQL database (see ``docs/design/postgres.md``).

| module | job |
|---|---|
| ``engine.py`` | ``PostgresEngine``: lifecycle, the catalog cache, topic admin, producer ids |
| ``partition.py`` | ``PgPartition``: cached offsets, reads and lookups |
| ``writer.py`` | the commit queue: appends and markers, offsets assigned in the transaction |
| ``maintenance.py`` | retention, DeleteRecords, compaction |
| ``notify.py`` | LISTEN/NOTIFY between brokers sharing the database |
| ``state.py`` | the ``StateStore`` (state logs as partitions of kind ``state``) |
| ``schema.py`` | the schema and its migrations |
| ``db.py`` | the connection pool; what a PostgreSQL failure becomes |
"""

from bayou.storage.postgres.engine import PostgresEngine

__all__ = ["PostgresEngine"]
