"""What the runtime does when something fails: retries with back-off, error tolerance and
the dead-letter topic, with Kafka Connect's keys and header names.

- A task call (``start``, ``open``, ``put``, ``flush``, ``poll``) raising ``RetriableError``
  is retried with exponential back-off (0.3 s doubling, at most
  ``errors.retry.delay.max.ms``, default 60 s) until ``errors.retry.timeout`` ms have passed
  (absent or ``-1``: for ever, as Kafka Connect redelivers a ``put``; ``0``: no retry).
- A record the converters or the transforms cannot handle, or that the task refuses
  (``RecordError``), fails the task under ``errors.tolerance=none`` (the default); under
  ``all`` it is skipped, and written as it came (key, value, headers) to
  ``errors.deadletterqueue.topic.name`` when a sink names one, with the error in
  ``__connect.errors.*`` headers when ``errors.deadletterqueue.context.headers.enable``.
  ``errors.log.enable`` logs each one (rate-limited to one line a second).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bayou.connect.api import ConfigError, ConnectError, ConnectorConfig, RetriableError

log = logging.getLogger(__name__)

T = TypeVar("T")

INITIAL_RETRY_DELAY_S = 0.3
HEADER_PREFIX = "__connect.errors."

# Kafka Connect's stage names (org.apache.kafka.connect.runtime.errors.Stage)
KEY_CONVERTER = "KEY_CONVERTER"
VALUE_CONVERTER = "VALUE_CONVERTER"
TRANSFORMATION = "TRANSFORMATION"
TASK_PUT = "TASK_PUT"
TASK_POLL = "TASK_POLL"


class Stopped(Exception):
    """The task was asked to stop while waiting to retry."""


class ToleranceExceeded(ConnectError):
    """A record failed and ``errors.tolerance`` is ``none``."""


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    tolerance_all: bool
    retry_timeout_ms: int  # -1: for ever
    retry_delay_max_ms: int
    dlq_topic: str | None
    dlq_context_headers: bool
    log_errors: bool

    @staticmethod
    def from_config(config: ConnectorConfig) -> ErrorPolicy:
        tolerance = (config.get("errors.tolerance", "none") or "none").strip().lower()
        if tolerance not in ("none", "all"):
            raise ConfigError(
                f"connector {config.name!r}: errors.tolerance must be none or all, not "
                f"{tolerance!r}"
            )
        return ErrorPolicy(
            tolerance_all=tolerance == "all",
            retry_timeout_ms=config.get_int("errors.retry.timeout", -1),
            retry_delay_max_ms=max(1, config.get_int("errors.retry.delay.max.ms", 60_000)),
            dlq_topic=config.get("errors.deadletterqueue.topic.name") or None,
            dlq_context_headers=config.get_bool(
                "errors.deadletterqueue.context.headers.enable", False
            ),
            log_errors=config.get_bool("errors.log.enable", False),
        )

    def retry(self, what: str, call: Callable[[], T], stop: threading.Event) -> T:
        """``call()``, again after a back-off while it raises ``RetriableError`` (see the
        module docstring); ``Stopped`` when ``stop`` is set meanwhile."""
        delay = INITIAL_RETRY_DELAY_S
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return call()
            except RetriableError as exc:
                attempt += 1
                waited_ms = (time.monotonic() - started) * 1000
                if 0 <= self.retry_timeout_ms <= waited_ms:
                    raise ConnectError(
                        f"{what} still failing after {attempt} attempt(s) in "
                        f"{waited_ms / 1000:.1f} s (errors.retry.timeout): {exc}"
                    ) from exc
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("%s failed (attempt %d), retrying: %s", what, attempt, exc)
                pause = delay
                if self.retry_timeout_ms >= 0:
                    pause = min(pause, max(0.0, (self.retry_timeout_ms - waited_ms) / 1000))
                if stop.wait(pause):
                    raise Stopped() from exc
                delay = min(delay * 2, self.retry_delay_max_ms / 1000)


def error_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    connector: str,
    task_id: int,
    stage: str,
    class_name: str,
    error: BaseException,
) -> list[tuple[str, bytes]]:
    """Kafka Connect's dead-letter context headers for ``error``."""
    trace = "".join(traceback.format_exception(error)).strip()
    values = {
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "connector.name": connector,
        "task.id": str(task_id),
        "stage": stage,
        "class.name": class_name,
        "exception.class.name": f"{type(error).__module__}.{type(error).__qualname__}",
        "exception.message": str(error),
        "exception.stacktrace": trace,
    }
    return [(HEADER_PREFIX + name, value.encode()) for name, value in values.items()]


class RateLimitedLog:
    """At most one line a second per logger call site (errors a client can trigger)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.last = 0.0
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} more since the last line)"
        self.suppressed = 0
        self.last = now
        log.warning(message, *args)
