"""The PostgreSQL schema and its migrations.

Theory of operation
-------------------
Everything lives in the schema ``bayou`` of the database the URL names.  ``migrate`` runs
when an engine opens: under a transaction-scoped advisory lock (brokers starting together
migrate once, the others wait and find the work done) it creates the schema and the
``schema_version`` table if missing, then applies every migration newer than the last
recorded one, in order, each in the same transaction as its version row — a migration is
applied whole or not at all.

``MIGRATIONS`` only ever grows: a released migration is never edited; a change of schema is
a new entry.  Each entry says from which schema version on a broker may still run against
it (``compatible_from``):

* an *additive* migration (a new table, a new column with a default, a new index) keeps the
  previous ``compatible_from``: brokers of the previous release keep working on the upgraded
  database, so a rolling upgrade is possible (upgrade one broker, which migrates; the others
  follow one by one);
* a *breaking* migration (a column renamed or dropped, a meaning changed) sets
  ``compatible_from`` to its own version: older brokers refuse to start on it (every broker
  must be stopped, then the new release started).

A broker that finds a database newer than it knows starts only when the newest recorded
``compatible_from`` is at most its own latest version; otherwise it stops with one line
saying which version the database has.  Downgrades are not supported.

Tables (version 1; ``docs/design/postgres.md`` explains each column):

``cluster``          the cluster id and the next free producer-id block
``broker_configs``   dynamic broker configs, by scope (``default`` or a node id)
``topics``           user topics and state logs (``kind``), their partition counts and configs
``partitions``       per partition: offsets, the active segment, leader epoch, version
``segments``         closed segments (the active one is in its partition's row)
``batches``          record batches as stored: one row per batch, keyed (partition, base offset)
``producers``        idempotent-producer and open-transaction state
``aborted_txns``     the aborted-transaction index

Version 2 adds ``objects`` (objects of record batches: the ``s3://`` engine) and, in
``batches``, the object and position of a batch whose bytes are there (``data`` is NULL then);
``cluster.object_store`` names the bucket and prefix of a database the ``s3://`` engine owns.
Version 3 adds ``brokers`` (one row per node id: its address and lease) and
``partitions.leader_id`` (the node that claimed the partition's current ``leader_epoch``),
for the cluster layer (``cluster.py``, ``docs/design/cluster.md``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bayou.errors import InvalidConfig

SCHEMA = "bayou"
_LOCK_KEY = 0x6261796F75  # "bayou": the advisory lock migrations run under


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    compatible_from: int
    sql: str


_V1 = """
CREATE TABLE bayou.cluster (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    cluster_id text NOT NULL,
    next_producer_id bigint NOT NULL DEFAULT 0
);

CREATE TABLE bayou.broker_configs (
    scope text PRIMARY KEY,
    configs jsonb NOT NULL DEFAULT '{}',
    options jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE bayou.topics (
    topic_id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('topic', 'state')),
    name text NOT NULL,
    partitions integer NOT NULL,
    configs jsonb NOT NULL DEFAULT '{}'
);
-- one name per kind, and no two topics whose names differ only by '.' versus '_'
CREATE UNIQUE INDEX topics_name ON bayou.topics (kind, replace(name, '.', '_'));

CREATE TABLE bayou.partitions (
    id bigserial PRIMARY KEY,
    topic_id uuid NOT NULL REFERENCES bayou.topics ON DELETE CASCADE,
    index integer NOT NULL,
    leader_epoch integer NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0,
    log_start_offset bigint NOT NULL DEFAULT 0,
    next_offset bigint NOT NULL DEFAULT 0,
    first_unstable_offset bigint NOT NULL DEFAULT -1,
    size_bytes bigint NOT NULL DEFAULT 0,
    has_aborted boolean NOT NULL DEFAULT false,
    segment_base bigint NOT NULL DEFAULT 0,
    segment_created_ms bigint NOT NULL,
    segment_size bigint NOT NULL DEFAULT 0,
    segment_max_timestamp bigint NOT NULL DEFAULT -1,
    cleaner jsonb,
    UNIQUE (topic_id, index)
);

CREATE TABLE bayou.segments (
    partition_id bigint NOT NULL,
    base_offset bigint NOT NULL,
    next_offset bigint NOT NULL,
    created_ms bigint NOT NULL,
    size bigint NOT NULL,
    max_timestamp bigint NOT NULL,
    PRIMARY KEY (partition_id, base_offset)
);

CREATE TABLE bayou.batches (
    partition_id bigint NOT NULL,
    base_offset bigint NOT NULL,
    last_offset bigint NOT NULL,
    max_timestamp bigint NOT NULL,
    size integer NOT NULL,
    segment bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (partition_id, base_offset)
);
-- batches are stored as produced (often compressed already): out of line, not compressed
ALTER TABLE bayou.batches ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE bayou.producers (
    partition_id bigint NOT NULL,
    producer_id bigint NOT NULL,
    epoch integer NOT NULL,
    batches bigint[] NOT NULL,
    txn_first_offset bigint NOT NULL,
    coordinator_epoch integer NOT NULL,
    last_timestamp bigint NOT NULL,
    PRIMARY KEY (partition_id, producer_id)
);

CREATE TABLE bayou.aborted_txns (
    partition_id bigint NOT NULL,
    last_offset bigint NOT NULL,
    producer_id bigint NOT NULL,
    first_offset bigint NOT NULL,
    last_stable_offset bigint NOT NULL,
    PRIMARY KEY (partition_id, last_offset)
);

-- Whole batches from the one holding p_offset, below p_stop, up to p_max_bytes (at least
-- one when p_min_one: KIP-74); stops reading as soon as the budget is spent.
CREATE FUNCTION bayou.read_batches(
    p_partition bigint, p_offset bigint, p_stop bigint, p_max_bytes bigint,
    p_min_one boolean
) RETURNS TABLE (data bytea) LANGUAGE plpgsql STABLE
SET work_mem = '256MB' AS $$
DECLARE
    total bigint := 0;
    floor_base bigint;
    r record;
BEGIN
    SELECT coalesce(max(b.base_offset), 0) INTO floor_base FROM bayou.batches b
     WHERE b.partition_id = p_partition AND b.base_offset <= p_offset;
    FOR r IN
        SELECT b.data AS d, b.size AS s FROM bayou.batches b
         WHERE b.partition_id = p_partition AND b.base_offset >= floor_base
           AND b.last_offset >= p_offset AND b.base_offset < p_stop
         ORDER BY b.base_offset
    LOOP
        IF total + r.s > p_max_bytes AND (total > 0 OR NOT p_min_one) THEN
            EXIT;
        END IF;
        total := total + r.s;
        data := r.d;
        RETURN NEXT;
        EXIT WHEN total >= p_max_bytes;
    END LOOP;
END $$;
"""

# Version 2 (additive): batches whose bytes are in object storage (the s3:// engine).  A
# batch row then holds no ``data`` but the object and the byte position of the batch in it;
# ``objects`` lists the objects (inserted in the transaction that indexes their batches).
_V2 = """
ALTER TABLE bayou.batches ALTER COLUMN data DROP NOT NULL,
    ADD COLUMN object_id bigint, ADD COLUMN object_pos bigint;
CREATE INDEX batches_object ON bayou.batches (object_id) WHERE object_id IS NOT NULL;

CREATE TABLE bayou.objects (
    id bigint PRIMARY KEY,
    key text NOT NULL,
    size bigint NOT NULL,
    created_ms bigint NOT NULL
);

ALTER TABLE bayou.cluster ADD COLUMN object_store text;

-- read_batches for either kind of row: each batch's base offset and size, and its bytes
-- inline (data) or where they are (object id and key, position)
CREATE FUNCTION bayou.read_batch_refs(
    p_partition bigint, p_offset bigint, p_stop bigint, p_max_bytes bigint,
    p_min_one boolean
) RETURNS TABLE (base_offset bigint, size integer, data bytea, object_id bigint,
                 object_pos bigint, object_key text)
LANGUAGE plpgsql STABLE SET work_mem = '256MB' AS $$
DECLARE
    total bigint := 0;
    floor_base bigint;
    r record;
BEGIN
    SELECT coalesce(max(b.base_offset), 0) INTO floor_base FROM bayou.batches b
     WHERE b.partition_id = p_partition AND b.base_offset <= p_offset;
    FOR r IN
        SELECT b.base_offset AS o, b.size AS s, b.data AS d, b.object_id AS oid,
               b.object_pos AS pos, ob.key AS k
          FROM bayou.batches b LEFT JOIN bayou.objects ob ON ob.id = b.object_id
         WHERE b.partition_id = p_partition AND b.base_offset >= floor_base
           AND b.last_offset >= p_offset AND b.base_offset < p_stop
         ORDER BY b.base_offset
    LOOP
        IF total + r.s > p_max_bytes AND (total > 0 OR NOT p_min_one) THEN
            EXIT;
        END IF;
        total := total + r.s;
        base_offset := r.o; size := r.s; data := r.d; object_id := r.oid;
        object_pos := r.pos; object_key := r.k;
        RETURN NEXT;
        EXIT WHEN total >= p_max_bytes;
    END LOOP;
END $$;
"""

# Version 3: the cluster layer (``cluster.py``, additive: brokers of version 1 ignore it).
_V3 = """
CREATE TABLE bayou.brokers (
    node_id integer PRIMARY KEY,
    incarnation uuid NOT NULL,
    host text NOT NULL,
    port integer NOT NULL,
    rack text,
    started_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);

ALTER TABLE bayou.partitions ADD COLUMN leader_id integer NOT NULL DEFAULT -1;
"""

# Version 4: each broker's TLS listener (additive: brokers of version 3 leave it 0).
_V4 = """
ALTER TABLE bayou.brokers ADD COLUMN tls_port integer NOT NULL DEFAULT 0;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", 1, _V1),
    Migration(2, "batches in object storage", 1, _V2),
    Migration(3, "brokers and partition leaders", 1, _V3),
    Migration(4, "brokers' TLS listeners", 1, _V4),
)
LATEST = MIGRATIONS[-1].version


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring the database's schema up to ``LATEST`` (see the module docstring); returns the
    version it had before (0: an empty database).  ``conn`` must be in autocommit mode."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                    version integer PRIMARY KEY,
                    description text NOT NULL,
                    compatible_from integer NOT NULL,
                    applied_ms bigint NOT NULL
                )"""
        )
        cur = await conn.execute(
            f"SELECT version, compatible_from FROM {SCHEMA}.schema_version "
            "ORDER BY version DESC LIMIT 1"
        )
        row = await cur.fetchone()
        current, compatible_from = (int(row[0]), int(row[1])) if row else (0, 0)
        if current > LATEST:
            if compatible_from > LATEST:
                raise InvalidConfig(
                    f"the database's Bayou schema is version {current}, which needs a broker "
                    f"that knows version {compatible_from} or later (this one knows "
                    f"{LATEST}): upgrade the broker"
                )
            return current
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_version "
                "(version, description, compatible_from, applied_ms) VALUES (%s, %s, %s, %s)",
                (
                    migration.version,
                    migration.description,
                    migration.compatible_from,
                    time.time_ns() // 1_000_000,
                ),
            )
        return current
