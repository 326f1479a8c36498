"""One task of a connector, in a thread of its own, with the state Kafka Connect reports
(``RUNNING``, ``PAUSED``, ``FAILED`` with its trace, ``UNASSIGNED`` before it starts and
after it stops)."""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from bayou.connect.api import ConnectorConfig, SinkTask, SourceTask
from bayou.connect.runtime.converters import Converter
from bayou.connect.runtime.errors import ErrorPolicy, Stopped
from bayou.connect.transforms import Chain

log = logging.getLogger(__name__)

UNASSIGNED = "UNASSIGNED"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
FAILED = "FAILED"
RESTARTING = "RESTARTING"


@dataclass(frozen=True)
class Prepared:
    """A validated connector configuration: what every task of it needs."""

    config: ConnectorConfig
    task_class: type[SinkTask] | type[SourceTask]
    is_sink: bool
    key_converter: Converter
    value_converter: Converter
    chain: Chain
    policy: ErrorPolicy
    tasks_max: int

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def type(self) -> str:
        return "sink" if self.is_sink else "source"


class TaskRunner:
    """The thread running one task; subclasses implement ``work``."""

    def __init__(
        self, prepared: Prepared, task_id: int, client_config: dict[str, Any], worker_id: str
    ) -> None:
        self.prepared = prepared
        self.task_id = task_id
        self.client_config = client_config
        self.worker_id = worker_id
        self.state = UNASSIGNED
        self.trace: str | None = None
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"connect-{prepared.name}-{task_id}", daemon=True
        )

    @property
    def name(self) -> str:
        return self.prepared.name

    @property
    def config(self) -> ConnectorConfig:
        return self.prepared.config.with_task(self.task_id)

    def start(self, paused: bool = False) -> None:
        if paused:
            self.paused.set()
        self.state = PAUSED if paused else RUNNING
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout_s: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        if self.state != FAILED:
            self.state = UNASSIGNED

    def pause(self) -> None:
        self.paused.set()
        if self.state == RUNNING:
            self.state = PAUSED

    def resume(self) -> None:
        self.paused.clear()
        if self.state == PAUSED:
            self.state = RUNNING

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.task_id, "state": self.state, "worker_id": self.worker_id}
        if self.state == FAILED and self.trace:
            out["trace"] = self.trace
        return out

    def _run(self) -> None:
        try:
            self.work()
        except Stopped:
            pass
        except BaseException as exc:
            self.trace = "".join(traceback.format_exception(exc))
            self.state = FAILED
            log.error("connector %s task %d failed: %s", self.name, self.task_id, exc)
            log.debug("connector %s task %d: %s", self.name, self.task_id, self.trace)

    def work(self) -> None:
        raise NotImplementedError
