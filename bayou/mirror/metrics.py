"""``/metrics`` of a running mirror (``bayou mirror run --metrics-port``): how far the copy
is behind, per partition — records in the source not yet acknowledged by the target, and
seconds since the oldest record read but not acknowledged — as measured every
``--interval`` (the copy loop measures; a scrape only reads the last measurement).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bayou.mirror.runner import Mirror


class MirrorCollector(Collector):
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def collect(self) -> Iterator[Metric]:
        labels = ["mirror", "topic", "partition"]
        records = GaugeMetricFamily(
            "bayou_mirror_lag_records", "Source records not yet copied to the target", labels=labels
        )
        seconds = GaugeMetricFamily(
            "bayou_mirror_lag_seconds",
            "Age of the oldest record read from the source and not yet acknowledged by the target",
            labels=labels,
        )
        name = self.mirror.options.name
        for lag in list(self.mirror.last_lag):
            key = [name, lag.topic, str(lag.partition)]
            records.add_metric(key, lag.records)
            seconds.add_metric(key, lag.seconds)
        yield records
        yield seconds


def serve_metrics(mirror: Mirror, host: str, port: int) -> None:
    """``/metrics`` on ``host:port`` from a daemon thread, for as long as the process runs."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(mirror))
    start_http_server(port, addr=host, registry=registry)
