"""A running connector: its validated configuration and its tasks, with Kafka Connect's
status, pause/resume and restart.

``prepare`` validates a configuration without running anything (the REST API answers 400
with its message): the class is known and importable, ``tasks.max`` is a positive number,
the converters, transforms, predicates and error keys make sense.  ``ConnectorRunner``
starts ``tasks.max`` task threads (``sink.py``, ``source.py``); a connector whose
configuration fails is ``FAILED`` with the reason as its trace.  Tasks that fail stay
``FAILED`` until restarted (``restart``, ``restart_task``), as in Kafka Connect.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from bayou.connect.api import ConfigError, ConnectorConfig, SinkTask
from bayou.connect.registry import is_sink, task_class
from bayou.connect.runtime.converters import converter
from bayou.connect.runtime.errors import ErrorPolicy
from bayou.connect.runtime.sink import SinkTaskRunner
from bayou.connect.runtime.source import SourceTaskRunner
from bayou.connect.runtime.task import (
    FAILED,
    PAUSED,
    RESTARTING,
    RUNNING,
    UNASSIGNED,
    Prepared,
    TaskRunner,
)
from bayou.connect.transforms import build_chain

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


def prepare(config: ConnectorConfig) -> Prepared:
    """Validate ``config``; ``ConfigError`` names what is wrong."""
    class_name = config.connector_class
    try:
        cls = task_class(class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"connector.class {class_name!r} cannot be loaded: {exc}") from None
    tasks_max = config.get_int("tasks.max", 1)
    if tasks_max < 1:
        raise ConfigError(f"connector {config.name!r}: tasks.max must be at least 1")
    sink = issubclass(cls, SinkTask)
    if sink:
        topics = config.get_list("topics")
        if bool(topics) == bool(config.get("topics.regex")):
            raise ConfigError(f"connector {config.name!r}: give topics or topics.regex (one)")
    return Prepared(
        config=config,
        task_class=cls,
        is_sink=sink,
        key_converter=converter(config, "key", "string"),
        value_converter=converter(config, "value"),
        chain=build_chain(config),
        policy=ErrorPolicy.from_config(config),
        tasks_max=tasks_max,
    )


class ConnectorRunner:
    """One connector and its task threads (see the module docstring)."""

    def __init__(
        self,
        config: ConnectorConfig,
        client_config: dict[str, Any],
        worker_id: str,
        *,
        paused: bool = False,
    ) -> None:
        self.config = config
        self.client_config = client_config
        self.worker_id = worker_id
        self.paused = paused
        self.catalog_id = ""  # the broker's catalog record this runs (supervisor.py)
        self.prepared: Prepared | None = None
        self.state = UNASSIGNED
        self.trace: str | None = None
        self.tasks: list[TaskRunner] = []
        self.lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def type(self) -> str:
        if self.prepared is not None:
            return self.prepared.type
        try:
            return "sink" if is_sink(self.config.connector_class) else "source"
        except ConfigError:
            return "unknown"

    def start(self) -> None:
        with self.lock:
            try:
                self.prepared = prepare(self.config)
            except Exception as exc:
                self.state = FAILED
                self.trace = "".join(traceback.format_exception(exc))
                log.error("connector %s cannot start: %s", self.name, exc)
                return
            self.state = PAUSED if self.paused else RUNNING
            self.trace = None
            self.tasks = [self._new_task(i) for i in range(self.prepared.tasks_max)]
            for task in self.tasks:
                task.start(paused=self.paused)
            log.info(
                "connector %s (%s): %d task(s) %s",
                self.name,
                self.config.connector_class,
                len(self.tasks),
                "paused" if self.paused else "running",
            )

    def _new_task(self, task_id: int) -> TaskRunner:
        assert self.prepared is not None
        runner = SinkTaskRunner if self.prepared.is_sink else SourceTaskRunner
        return runner(self.prepared, task_id, self.client_config, self.worker_id)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        with self.lock:
            for task in self.tasks:
                task.stop()
            for task in self.tasks:
                task.join(timeout_s)
            self.state = UNASSIGNED

    def pause(self) -> None:
        with self.lock:
            self.paused = True
            if self.state == RUNNING:
                self.state = PAUSED
            for task in self.tasks:
                task.pause()

    def resume(self) -> None:
        with self.lock:
            self.paused = False
            if self.state == PAUSED:
                self.state = RUNNING
            for task in self.tasks:
                task.resume()

    def restart(self, include_tasks: bool = False, only_failed: bool = False) -> dict[str, Any]:
        """Kafka Connect's ``POST /connectors/{name}/restart`` (KIP-745): the connector (when
        ``only_failed`` is false or it failed) and its tasks (all, or the failed ones).
        Returns the status with what is being restarted in state ``RESTARTING``."""
        with self.lock:
            restart_connector = not only_failed or self.state == FAILED
            if self.prepared is None or self.state == FAILED:
                restart_connector = True
            if restart_connector and (self.prepared is None or self.state == FAILED):
                self.stop()
                self.start()
                return self.status(
                    restarting=set(range(len(self.tasks))) if include_tasks else set()
                )
            chosen = {
                t.task_id
                for t in self.tasks
                if include_tasks and (not only_failed or t.state == FAILED)
            }
            status = self.status(restarting=chosen, connector_restarting=restart_connector)
            for task_id in sorted(chosen):
                self.restart_task(task_id)
            return status

    def restart_task(self, task_id: int) -> None:
        with self.lock:
            old = self.tasks[task_id]
            old.state = RESTARTING
            old.stop()
            old.join(STOP_TIMEOUT_S)
            new = self._new_task(task_id)
            self.tasks[task_id] = new
            new.start(paused=self.paused)

    def has_task(self, task_id: int) -> bool:
        return 0 <= task_id < len(self.tasks)

    def status(
        self, restarting: set[int] | None = None, connector_restarting: bool = False
    ) -> dict[str, Any]:
        """Kafka Connect's ``GET /connectors/{name}/status`` body."""
        restarting = restarting or set()
        connector: dict[str, Any] = {
            "state": RESTARTING if connector_restarting else self.state,
            "worker_id": self.worker_id,
        }
        if self.state == FAILED and self.trace:
            connector["trace"] = self.trace
        tasks = []
        for task in self.tasks:
            entry = task.status()
            if task.task_id in restarting:
                entry["state"] = RESTARTING
                entry.pop("trace", None)
            tasks.append(entry)
        return {"name": self.name, "connector": connector, "tasks": tasks, "type": self.type}
