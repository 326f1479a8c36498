"""One broker's metrics: cheap counters on the hot paths, Prometheus families at scrape time.

Theory of operation
-------------------
The doors' hot paths must not pay for observability: a Produce request of a thousand records
costs one dictionary lookup and two integer additions per partition it writes, never work per
record.  So the traffic counters are plain Python integers held per door and topic
(``DoorTraffic``: ``[messages, bytes]`` lists in a dict), updated without locks — every door
runs on the broker's one event loop — and turned into Prometheus counter families only when
``/metrics`` is scraped (``BrokerCollector``).  Only what needs buckets goes through
``prometheus_client`` on the hot path: one ``Histogram.observe`` per request (the labelled child is
looked up once per door and API, then cached), about a microsecond.

Names follow Kafka's JMX metrics as the Prometheus JMX exporter spells them
(``kafka_server_brokertopicmetrics_bytesin_total``), with a ``door`` label beside ``topic``
since four protocols write the same topics; consumer-group lag follows kafka_exporter
(``kafka_consumergroup_lag{group,topic,partition}``).  The full table is in
``docs/design/observability.md``.

Each ``BrokerMetrics`` has its own ``CollectorRegistry`` (not the process-wide default), so
several brokers in one process (tests) do not mix their numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

DOORS = ("kafka", "http", "mqtt", "amqp")

# Request durations: from half a millisecond (a metadata request) to long polls (30 s).
REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# fsync: tens of microseconds (page cache clean) to seconds (a busy disk).
FSYNC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# How late a timer fires on the event loop.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# No ``_created`` series beside every counter and histogram (a process-wide switch of the
# client; Kafka's metrics have no such series either).
disable_created_metrics()  # type: ignore[no-untyped-call]


class Appended(Protocol):
    """What an append answers (``bayou.storage.engine.AppendResult``), as counted here."""

    @property
    def record_count(self) -> int: ...


class KeyValue(Protocol):
    """A decoded record as counted here (``bayou.protocol.kafka.records.DecodedRecord``)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


class Purgatory:
    """Requests waiting, as Kafka's purgatories count them: Produce requests waiting for their
    writes to become durable, Fetch requests long-polling for data."""

    __slots__ = ("fetch", "produce")

    def __init__(self) -> None:
        self.produce = 0
        self.fetch = 0


class DoorTraffic:
    """One door's counters: messages and bytes in and out per topic, its requests' durations
    by API, and its open connections (a function the door sets)."""

    __slots__ = ("_histogram", "_observers", "connections", "door", "topics_in", "topics_out")

    def __init__(self, door: str, request_seconds: Histogram) -> None:
        self.door = door
        self.topics_in: dict[str, list[int]] = {}  # topic -> [messages, bytes]
        self.topics_out: dict[str, list[int]] = {}
        self.connections: Callable[[], int] = _none
        self._histogram = request_seconds
        self._observers: dict[str, Callable[[float], None]] = {}

    def received(self, topic: str, messages: int, nbytes: int) -> None:
        """``messages`` records of ``nbytes`` written to ``topic`` through this door."""
        counts = self.topics_in.get(topic)
        if counts is None:
            counts = self.topics_in[topic] = [0, 0]
        counts[0] += messages
        counts[1] += nbytes

    def sent(self, topic: str, messages: int, nbytes: int) -> None:
        """``messages`` records of ``nbytes`` of ``topic`` delivered through this door."""
        counts = self.topics_out.get(topic)
        if counts is None:
            counts = self.topics_out[topic] = [0, 0]
        counts[0] += messages
        counts[1] += nbytes

    def sent_records(self, topic: str, records: Sequence[KeyValue]) -> None:
        """Count decoded records delivered (their keys' and values' bytes), for doors that
        decode records anyway."""
        nbytes = 0
        for record in records:
            nbytes += len(record.key or b"") + len(record.value or b"")
        self.sent(topic, len(records), nbytes)

    def appended(
        self,
        writes: Sequence[tuple[str, int, Sized]],
        results: Iterable[Appended | BaseException],
    ) -> None:
        """Count what an ``append_many`` stored: one batch per write, failures skipped."""
        for (topic, _partition, batch), result in zip(writes, results, strict=False):
            if not isinstance(result, BaseException):
                self.received(topic, result.record_count, len(batch))

    def observer(self, api: str) -> Callable[[float], None]:
        """The ``observe(seconds)`` of this door's request-duration histogram for ``api``."""
        found = self._observers.get(api)
        if found is None:
            found = self._observers[api] = self._histogram.labels(self.door, api).observe
        return found

    def totals(self) -> tuple[int, int, int, int]:
        """(messages in, bytes in, messages out, bytes out) over every topic."""
        mi = bi = mo = bo = 0
        for m, b in self.topics_in.values():
            mi += m
            bi += b
        for m, b in self.topics_out.values():
            mo += m
            bo += b
        return mi, bi, mo, bo

    def forget(self, live: Mapping[str, object]) -> None:
        """Drop the counters of topics that no longer exist (a deleted topic's series end,
        as Kafka unregisters its per-topic metrics)."""
        for counters in (self.topics_in, self.topics_out):
            for topic in [t for t in counters if t not in live]:
                del counters[topic]


class Sized(Protocol):
    def __len__(self) -> int: ...


def _none() -> int:
    return 0


class BrokerMetrics:
    """The metrics of one broker (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_seconds = Histogram(
            "kafka_network_request_duration_seconds",
            "Time from a request's arrival to its answer (to the start of a streamed answer), "
            "by door and API.",
            ["door", "request"],
            registry=self.registry,
            buckets=REQUEST_BUCKETS,
        )
        self.fsync_seconds = Histogram(
            "bayou_log_fsync_duration_seconds",
            "Duration of each fsync of a partition or state log (group-committed).",
            registry=self.registry,
            buckets=FSYNC_BUCKETS,
        )
        self.loop_lag_seconds = Histogram(
            "bayou_event_loop_lag_seconds",
            "How late a timer on the broker's event loop fired (probed twice a second).",
            registry=self.registry,
            buckets=LOOP_LAG_BUCKETS,
        )
        self.observe_fsync: Callable[[float], None] = self.fsync_seconds.observe
        self.purgatory = Purgatory()
        self._doors: dict[str, DoorTraffic] = {}
        for door in DOORS:
            self.door(door)

    def door(self, name: str) -> DoorTraffic:
        found = self._doors.get(name)
        if found is None:
            found = self._doors[name] = DoorTraffic(name, self.request_seconds)
        return found

    @property
    def doors(self) -> Mapping[str, DoorTraffic]:
        return self._doors

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (text format 0.0.4, or OpenMetrics when the
        scraper asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
