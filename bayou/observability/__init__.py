"""What operators watch: Prometheus metrics and structured logs (see
``docs/design/observability.md``).

``BrokerMetrics`` is one broker's metrics: the doors count into cheap per-door objects
(``DoorTraffic``) on their hot paths, and everything derived from the broker's state (log
offsets and sizes, consumer-group lag, connections) is computed when ``/metrics`` is scraped.
``metrics.py`` imports nothing of the broker (the core, the doors and the storage engine feed
it through small hooks); ``broker_collector.py`` reads the core when scraped.
"""

from bayou.observability.metrics import BrokerMetrics, DoorTraffic, Purgatory

__all__ = ["BrokerMetrics", "DoorTraffic", "Purgatory"]
