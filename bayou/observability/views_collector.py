"""``/metrics`` for the SQL views a broker runs (``--views serve``): per view, records read
and written, records sent to its dead-letter topic, late records dropped.

The counters live in each view's processor (``StreamStats``), bumped by its own thread;
a scrape reads them as they are (plain integers), so the per-record path pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

FAMILIES = (
    ("records_in", "bayou_view_records_in", "Records a view read from its source"),
    ("records_out", "bayou_view_records_out", "Results a view wrote to its topic"),
    ("dead_letters", "bayou_view_dead_letters", "Records a view sent to its dead-letter topic"),
    ("late_dropped", "bayou_view_late_records_dropped", "Records that came after their window"),
)


class ViewsCollector(Collector):
    """Reads ``stats()`` (view name → counters) at each scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        views = self.stats()
        for key, name, documentation in FAMILIES:
            family = CounterMetricFamily(name, documentation, labels=["view"])
            for view, counters in sorted(views.items()):
                family.add_metric([view], counters.get(key, 0))
            yield family
