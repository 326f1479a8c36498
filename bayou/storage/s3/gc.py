"""Deleting objects nothing refers to any more.

Theory of operation
-------------------
An object is recorded (a row of ``objects``) in the transaction that indexes its batches, and
only that transaction ever adds references to it.  Retention, DeleteRecords, topic deletion
and compaction (which moves rewritten batches into PostgreSQL rows) only remove batch rows.
So an object with no batch row left can never be referred to again, and a round of the
collector — after every maintenance round, under a cluster-wide advisory lock so one broker
at a time does it — can:

1. delete the rows of unreferenced objects (one statement, committed), then their keys in
   the store, and their chunks from this broker's cache;
2. once per ``orphan_grace_ms`` (and on ``maintain()``), list the objects under
   ``objects/`` and delete those no row names that are older than ``orphan_grace_ms`` by the
   time in their key: objects whose flush crashed or failed between its PUT and its COMMIT,
   and objects whose row step 1 deleted but whose DELETE in the store failed.  The grace
   (1 h by default) outlasts any flush in progress, retries included, and clock skew between
   brokers.

A reader that found a batch in the index just before retention deleted it may then miss the
object: it gets KAFKA_STORAGE_ERROR, and its retry OFFSET_OUT_OF_RANGE (as with tiered
storage, and as a Kafka broker answers a read racing a segment deletion).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import psycopg

from bayou.errors import KafkaError
from bayou.storage.postgres.db import Connection
from bayou.storage.s3.flusher import OBJECTS, key_time

if TYPE_CHECKING:
    from bayou.storage.s3.engine import ObjectEngine

log = logging.getLogger(__name__)

LOCK_KEY = 0x6261796F75 + 1  # beside the migrations' advisory lock
DELETE_CHUNK = 1000

_UNREFERENCED = """DELETE FROM bayou.objects o WHERE NOT EXISTS
    (SELECT 1 FROM bayou.batches b WHERE b.object_id = o.id) RETURNING o.id, o.key"""


class ObjectCollector:
    def __init__(self, engine: ObjectEngine) -> None:
        self._engine = engine
        self._listed_at: float | None = None
        self.list_next = False  # list the store in the next round (``maintain()``)
        self.deleted = 0
        self.orphans = 0

    async def round(self, now_ms: int) -> int:
        """One collection; how many objects it deleted."""
        engine = self._engine
        grace_s = engine.settings.orphan_grace_ms / 1000
        list_now = (
            self.list_next
            or self._listed_at is None
            or (time.monotonic() - self._listed_at >= grace_s)
        )
        deleted = 0
        try:
            async with engine.db.connection("collecting objects") as conn:
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                got = await cur.fetchone()
                if not (got and got[0]):
                    return 0
                try:
                    cur = await conn.execute(_UNREFERENCED)
                    rows = await cur.fetchall()
                    await self._delete([key for _id, key in rows])
                    for object_id, _key in rows:
                        engine.cache.discard(object_id)
                    deleted = len(rows)
                    if list_now:
                        self.list_next = False
                        self._listed_at = time.monotonic()
                        deleted += await self._orphans(conn, now_ms)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        except (psycopg.Error, KafkaError) as exc:
            log.warning("collecting unreferenced objects failed: %s", exc)
        self.deleted += deleted
        if deleted:
            log.info("deleted %d unreferenced object(s)", deleted)
        return deleted

    async def _orphans(self, conn: Connection, now_ms: int) -> int:
        limit = now_ms - self._engine.settings.orphan_grace_ms
        old: list[str] = []
        for info in await self._engine.objects.list(OBJECTS):
            created = key_time(info.key)
            if created is not None and created <= limit:
                old.append(info.key)
        if not old:
            return 0
        cur = await conn.execute("SELECT key FROM bayou.objects WHERE key = ANY(%s)", (old,))
        known = {row[0] for row in await cur.fetchall()}
        orphans = [key for key in old if key not in known]
        await self._delete(orphans)
        self.orphans += len(orphans)
        return len(orphans)

    async def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_CHUNK):
            await self._engine.objects.delete(keys[i : i + DELETE_CHUNK])
