"""One module per Kafka API; importing this package registers them all."""

from bayou.broker.handlers import (  # noqa: F401 - imported for their registrations
    api_versions,
    create_partitions,
    create_topics,
    delete_topics,
    describe_cluster,
    describe_configs,
    fetch,
    init_producer_id,
    list_offsets,
    metadata,
    produce,
)
from bayou.broker.handlers.registry import HANDLERS, Registration, handles

__all__ = ["HANDLERS", "Registration", "handles"]
