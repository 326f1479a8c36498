"""What ``/metrics`` computes when it is scraped: traffic, connections, logs and group lag.

Everything here is read from memory on the event loop (the doors' counters, the engine's
partition offsets and sizes, the group coordinator's committed offsets), so a scrape costs
time proportional to the number of partitions and group offsets, and nothing on the hot
paths.  A partition or group that goes away simply stops being reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bayou.core.lag import group_lags
from bayou.errors import KafkaError
from bayou.observability.metrics import BrokerMetrics
from bayou.storage.engine import Segmented

if TYPE_CHECKING:
    from bayou.core import Core

TRAFFIC = (
    ("messagesin", "Records written", 0, True),
    ("bytesin", "Record-batch bytes written", 1, True),
    ("messagesout", "Records delivered to readers", 0, False),
    ("bytesout", "Record bytes delivered to readers", 1, False),
)


class BrokerCollector(Collector):
    """Scrape-time metrics of one broker (see the module docstring)."""

    def __init__(self, core: Core, metrics: BrokerMetrics) -> None:
        self.core = core
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic()
        yield from self._doors()
        yield from self._logs()
        yield from self._groups()

    def _traffic(self) -> Iterator[Metric]:
        live = self.core.topics()
        for name, help_text, index, incoming in TRAFFIC:
            family = CounterMetricFamily(
                f"kafka_server_brokertopicmetrics_{name}",
                f"{help_text}, by topic and door (messages out of the Kafka door: offsets its "
                "fetches moved past).",
                labels=["topic", "door"],
            )
            for door in self.metrics.doors.values():
                if index == 0 and incoming:
                    door.forget(live)
                counters = door.topics_in if incoming else door.topics_out
                for topic, counts in sorted(counters.items()):
                    family.add_metric([topic, door.door], counts[index])
            yield family

    def _doors(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "kafka_server_socketservermetrics_connection_count",
            "Open client connections, by door.",
            labels=["door"],
        )
        for door in self.metrics.doors.values():
            connections.add_metric([door.door], door.connections())
        yield connections
        purgatory = GaugeMetricFamily(
            "kafka_server_delayedoperationpurgatory_purgatorysize",
            "Requests waiting: Produce for durability, Fetch for data (long polls).",
            labels=["delayedOperation"],
        )
        purgatory.add_metric(["Produce"], self.metrics.purgatory.produce)
        purgatory.add_metric(["Fetch"], self.metrics.purgatory.fetch)
        yield purgatory

    def _logs(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        end = GaugeMetricFamily(
            "kafka_log_log_logendoffset", "The next offset to be written.", labels=labels
        )
        start = GaugeMetricFamily(
            "kafka_log_log_logstartoffset", "The first offset still in the log.", labels=labels
        )
        size = GaugeMetricFamily("kafka_log_log_size", "Bytes of the log.", labels=labels)
        segments = GaugeMetricFamily(
            "kafka_log_log_numlogsegments", "Segments of the log.", labels=labels
        )
        under_min_isr = GaugeMetricFamily(
            "kafka_cluster_partition_underminisr",
            "1 when the partition has fewer in-sync replicas than min.insync.replicas: with "
            "the one replica, when that config is above 1.",
            labels=labels,
        )
        partitions = 0
        for topic, meta in sorted(self.core.topics().items()):
            for index in range(meta.partitions):
                try:
                    p = self.core.partition(topic, index)
                except KafkaError:
                    continue
                partitions += 1
                key = [topic, str(index)]
                end.add_metric(key, p.log_end_offset)
                start.add_metric(key, p.log_start_offset)
                size.add_metric(key, p.size_bytes)
                if isinstance(p, Segmented):
                    segments.add_metric(key, p.segment_count)
                min_isr = p.config.values.get("min.insync.replicas", 1)
                under_min_isr.add_metric(key, 1 if int(min_isr) > 1 else 0)
        yield from (end, start, size, segments, under_min_isr)
        count = GaugeMetricFamily(
            "kafka_server_replicamanager_partitioncount", "Partitions on this broker."
        )
        count.add_metric([], partitions)
        yield count
        topics = GaugeMetricFamily("kafka_controller_kafkacontroller_globaltopiccount", "Topics.")
        topics.add_metric([], len(self.core.topics()))
        yield topics

    def _groups(self) -> Iterator[Metric]:
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records between the group's committed offset and the log end, per partition "
            "(also for groups with no live member).",
            labels=labels,
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "The group's committed offset, per partition.",
            labels=labels,
        )
        lag_sum = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "The group's lag over every partition.",
            labels=["group"],
        )
        totals: dict[str, int] = {}
        for row in group_lags(self.core):
            key = [row.group, row.topic, str(row.partition)]
            lag.add_metric(key, row.lag)
            current.add_metric(key, row.committed)
            totals[row.group] = totals.get(row.group, 0) + row.lag
        for group, total in sorted(totals.items()):
            lag_sum.add_metric([group], total)
        members = GaugeMetricFamily(
            "kafka_consumergroup_members", "Live members of the group.", labels=["group"]
        )
        driver = self.core.groups
        if driver is not None:
            for group_id, live in sorted(driver.read().groups.items()):
                members.add_metric([group_id], len(live.members))
        yield from (lag, current, lag_sum, members)
