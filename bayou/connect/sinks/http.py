"""``http-sink``: POST records as JSON to a URL, in batches, with retries and a rate limit.

Keys: ``http.url``; ``batch.size`` (records per request, default 100); ``linger.ms`` (how
long a partial batch waits for more, default 100); ``rate.limit`` (requests per second, 0 =
unlimited); ``http.headers`` (``Name: value`` pairs separated by ``|``, e.g. an
``Authorization``); ``http.timeout.ms`` (default 10 000).

The body is a JSON array with one object per record: ``topic``, ``partition``, ``offset``,
``timestamp`` (ms), ``key``, ``value`` (as the converters made them; bytes as base64 text)
and ``headers`` (an object of text values).  A 5xx or 429 answer, a timeout or a connection
error is retried with back-off (the runtime's ``RetriableError`` handling:
``errors.retry.timeout``, ``errors.retry.delay.max.ms``); batches already accepted are not
sent again.  Another 4xx fails the task (a receiver refusing the data will keep refusing
it).

Delivery is at least once: offsets are committed to ``connect-{name}`` after the requests
holding them were answered 2xx; a crash between an answer and the commit sends those
records again.  Receivers deduplicate by ``topic``/``partition``/``offset`` if they need to.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import httpx

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    ConnectorConfig,
    RetriableError,
    SinkRecord,
    SinkTask,
    TopicPartition,
)


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value


class HttpSinkTask(SinkTask):
    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self.url = config.require("http.url")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"connector {config.name!r}: http.url must be an http(s) URL")
        self.batch_size = max(1, config.get_int("batch.size", 100))
        self.linger_ms = max(0, config.get_int("linger.ms", 100))
        rate = config.get("rate.limit", "0") or "0"
        try:
            self.rate = float(rate)
        except ValueError:
            raise ConfigError(f"connector {config.name!r}: rate.limit must be a number") from None
        self.timeout_s = config.get_int("http.timeout.ms", 10_000) / 1000
        self.headers = {"Content-Type": "application/json"}
        for pair in (config.get("http.headers") or "").split("|"):
            name, sep, value = pair.partition(":")
            if sep and name.strip():
                self.headers[name.strip()] = value.strip()
        self.buffer: list[SinkRecord] = []
        self.first_buffered_ms = 0
        self.covered: dict[TopicPartition, int] = {}
        self.next_request_at = 0.0
        self.client: httpx.Client | None = None

    def start(self) -> None:
        self.client = httpx.Client(timeout=self.timeout_s)

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}  # at least once: the group's committed offsets

    def put(self, records: Sequence[SinkRecord]) -> None:
        if records and not self.buffer:
            self.first_buffered_ms = int(time.time() * 1000)
        self.buffer.extend(records)

    def flush_due(self, now_ms: int) -> bool:
        if len(self.buffer) >= self.batch_size:
            return True
        return bool(self.buffer) and now_ms - self.first_buffered_ms >= self.linger_ms

    def flush(self) -> Mapping[TopicPartition, int]:
        while self.buffer:
            batch = self.buffer[: self.batch_size]
            self._send(batch)
            del self.buffer[: len(batch)]
            for record in batch:
                self.covered[record.topic_partition] = record.offset + 1
        return dict(self.covered)

    def _send(self, batch: list[SinkRecord]) -> None:
        if self.rate > 0:
            wait = self.next_request_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.next_request_at = max(time.monotonic(), self.next_request_at) + 1 / self.rate
        body = [
            {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp_ms,
                "key": _json_safe(r.key),
                "value": _json_safe(r.value),
                "headers": {
                    name: (value.decode("utf-8", "replace") if value is not None else None)
                    for name, value in r.headers
                },
            }
            for r in batch
        ]
        assert self.client is not None
        try:
            answer = self.client.post(self.url, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise RetriableError(f"POST {self.url}: {type(exc).__name__}: {exc}") from exc
        status = answer.status_code
        if status >= 500 or status == 429:
            raise RetriableError(f"POST {self.url}: {status} {answer.text[:200]}")
        if status >= 300:
            raise ConnectError(f"POST {self.url}: {status} {answer.text[:200]}")

    def close(self, partitions: Collection[TopicPartition]) -> None:
        gone = set(partitions)
        self.buffer = [r for r in self.buffer if r.topic_partition not in gone]
        for tp in gone:
            self.covered.pop(tp, None)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
