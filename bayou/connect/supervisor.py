"""The broker's connectors: the catalog topic and the supervisor that runs what it holds.

Theory of operation
-------------------
The catalog is the compacted topic ``_bayou_connectors`` (one partition): key = connector
name, value = ``{"config": {…}, "state": "RUNNING"|"PAUSED", "id", "created"}`` JSON, a
tombstone for a deleted connector — the same shape of storage as the SQL views
(``bayou.streams.views``), and like Kafka Connect's config topic it keeps the target state
(paused or not) beside the configuration, so a pause outlives a restart.

``ConnectSupervisor`` runs inside ``bayou serve`` (``--connect serve``, the default).  One
thread follows the catalog over the broker's own Kafka listener and reconciles after every
change: a new connector starts, a changed configuration (a new ``id``) stops the old tasks
(flushing and committing) and starts new ones, a changed state pauses or resumes, a
tombstone stops and forgets.  The REST API (``routes_connect.py``) writes to the catalog and
waits until this thread has applied its record, so a ``GET`` after a ``POST`` sees the
connector running.  After a restart of the broker the thread reads the catalog from the
start and runs every connector again; sinks resume from their group's committed offsets (or
their targets' offsets), sources from their stored positions.  ``restart`` is not stored: it
acts on the tasks of this broker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bayou.connect.api import ConfigError, ConnectError, ConnectorConfig
from bayou.connect.runtime.connector import ConnectorRunner, prepare
from bayou.connect.runtime.offsets import ensure_compacted_topic
from bayou.connect.runtime.task import PAUSED, RUNNING

log = logging.getLogger(__name__)

CATALOG_TOPIC = "_bayou_connectors"
APPLY_TIMEOUT_S = 60.0


class UnknownConnector(ConnectError):
    pass


class ConnectorExists(ConnectError):
    pass


@dataclass(frozen=True)
class StoredConnector:
    name: str
    config: dict[str, str]
    state: str
    id: str
    created: int

    def encode(self) -> bytes:
        body = {"config": self.config, "state": self.state, "id": self.id, "created": self.created}
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def decode(name: str, raw: bytes) -> StoredConnector:
        data = json.loads(raw)
        config = {str(k): str(v) for k, v in dict(data["config"]).items()}
        return StoredConnector(
            name, config, str(data.get("state", RUNNING)), str(data["id"]), int(data["created"])
        )

    def connector_config(self) -> ConnectorConfig:
        return ConnectorConfig(self.name, self.config)


def normalise(name: str, config: Mapping[str, Any]) -> dict[str, str]:
    """A REST body's config as Connect's flat string map, with ``name`` in it."""
    flat = dict(ConnectorConfig.from_mapping(name, config).values)
    flat["name"] = name
    return flat


class ConnectSupervisor:
    """Runs the connectors of the catalog (see the module docstring)."""

    def __init__(
        self,
        client_config: dict[str, Any],
        worker_id: str,
        *,
        catalog_exists: Callable[[], bool] | None = None,
    ) -> None:
        self.config = client_config
        self.worker_id = worker_id
        self.catalog_exists = catalog_exists
        self.stored: dict[str, StoredConnector] = {}
        self.running: dict[str, ConnectorRunner] = {}
        self.applied = -1  # the catalog offset applied last
        self.changed = threading.Condition()
        self.write_lock = threading.Lock()
        self.producer: Any = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="connect", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout_s)
        runners = list(self.running.values())
        for runner in runners:
            for task in runner.tasks:
                task.stop()
        for runner in runners:
            runner.stop(timeout_s)
        self.running.clear()

    # ------------------------------------------------------------------ what the API asks

    def connectors(self) -> dict[str, StoredConnector]:
        with self.changed:
            return dict(self.stored)

    def get(self, name: str) -> StoredConnector:
        found = self.connectors().get(name)
        if found is None:
            raise UnknownConnector(f"Connector {name} not found")
        return found

    def runner(self, name: str) -> ConnectorRunner | None:
        return self.running.get(name)

    def create(self, name: str, config: Mapping[str, Any]) -> StoredConnector:
        with self.write_lock:
            if name in self.connectors():
                raise ConnectorExists(f"Connector {name} already exists")
            return self._store(name, normalise(name, config), RUNNING)

    def put_config(self, name: str, config: Mapping[str, Any]) -> tuple[StoredConnector, bool]:
        """Create or replace; returns the stored connector and whether it is new."""
        with self.write_lock:
            old = self.connectors().get(name)
            state = old.state if old is not None else RUNNING
            return self._store(name, normalise(name, config), state), old is None

    def set_state(self, name: str, state: str) -> None:
        with self.write_lock:
            old = self.get(name)
            if old.state != state:
                stored = StoredConnector(name, old.config, state, old.id, old.created)
                self._wait_applied(self._write(name, stored.encode()))

    def delete(self, name: str) -> None:
        with self.write_lock:
            self.get(name)
            self._wait_applied(self._write(name, None))

    def _store(self, name: str, config: dict[str, str], state: str) -> StoredConnector:
        prepare(ConnectorConfig(name, config))  # ConfigError → 400, nothing stored
        stored = StoredConnector(name, config, state, uuid.uuid4().hex[:8], int(time.time() * 1000))
        self._wait_applied(self._write(name, stored.encode()))
        return stored

    def _write(self, name: str, value: bytes | None) -> int:
        if self.producer is None:
            ensure_compacted_topic(self.config, CATALOG_TOPIC, 10)
            self.producer = Producer({**self.config, "enable.idempotence": True})
        result: list[Any] = []
        self.producer.produce(
            CATALOG_TOPIC,
            value,
            name.encode(),
            on_delivery=lambda err, msg: result.append((err, msg)),
        )
        self.producer.flush(30)
        if not result or result[0][0] is not None:
            raise ConnectError(
                f"cannot store the connector {name!r}: {result[0][0] if result else 'timeout'}"
            )
        offset: int = result[0][1].offset()
        return offset

    def _wait_applied(self, offset: int) -> None:
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        with self.changed:
            while self.applied < offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectError("the connector was stored but is not running yet")
                self.changed.wait(min(left, 0.5))

    # ------------------------------------------------------------------ following the catalog

    def _follow(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._follow_once()
            except Exception as exc:
                log.warning("connect: following the catalog failed, again in 2 s: %s", exc)
                self.stop_event.wait(2.0)

    def _follow_once(self) -> None:
        while self.catalog_exists is not None and not self.catalog_exists():
            if self.stop_event.wait(1.0):  # no connector was ever created
                return
        if self.catalog_exists is None:
            ensure_compacted_topic(self.config, CATALOG_TOPIC, 10)
        consumer = Consumer(
            {
                **self.config,
                "group.id": "_bayou-connect-catalog",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        stored: dict[str, StoredConnector] = {}
        try:
            consumer.assign([TopicPartition(CATALOG_TOPIC, 0, 0)])
            while not self.stop_event.is_set():
                last = -1
                for msg in consumer.consume(100, 0.5):
                    if msg.error() is not None:
                        continue
                    _apply(stored, msg.key(), msg.value())
                    last = msg.offset() or 0
                if last >= 0:
                    self._reconcile(stored)
                    with self.changed:
                        self.stored = dict(stored)
                        self.applied = last
                        self.changed.notify_all()
        finally:
            consumer.close()

    def _reconcile(self, stored: dict[str, StoredConnector]) -> None:
        for name, runner in list(self.running.items()):
            wanted = stored.get(name)
            if wanted is None or wanted.id != runner.catalog_id:
                log.info("connector %s: stopping", name)
                runner.stop()
                del self.running[name]
        for name, wanted in stored.items():
            existing = self.running.get(name)
            if existing is None:
                runner = ConnectorRunner(
                    wanted.connector_config(),
                    self.config,
                    self.worker_id,
                    paused=wanted.state == PAUSED,
                )
                runner.catalog_id = wanted.id
                self.running[name] = runner
                runner.start()
            elif wanted.state == PAUSED and not existing.paused:
                existing.pause()
            elif wanted.state != PAUSED and existing.paused:
                existing.resume()


def _apply(stored: dict[str, StoredConnector], key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    name = key.decode("utf-8", "replace")
    if value is None:
        stored.pop(name, None)
        return
    try:
        stored[name] = StoredConnector.decode(name, value)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("connect catalog: the record of %r is unreadable: %s", name, exc)


__all__ = [
    "CATALOG_TOPIC",
    "ConfigError",
    "ConnectSupervisor",
    "ConnectorExists",
    "StoredConnector",
    "UnknownConnector",
]
