"""Client quotas (Kafka's KIP-13/55/124/219/546/599/612): what a client may use, per user and
client id, and how many connections an address may open a second.

``Quotas`` (``limits.py``) is what the core holds and every door asks; ``QuotaStore``
(``store.py``) keeps the quotas in the state log ``__bayou_quotas``; ``entities.py`` is
Kafka's entity model and checks; ``rate.py`` Kafka's sampled rate.  How the doors enforce
them: ``docs/design/security.md`` (Quotas).
"""

from __future__ import annotations

from bayou.core.quotas.entities import (
    CLIENT_ID,
    CONNECTION_CREATION_RATE,
    CONSUMER_BYTE_RATE,
    CONTROLLER_MUTATION_RATE,
    IP,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    DescribeFilter,
    Entity,
    QuotaRequestError,
    Values,
)
from bayou.core.quotas.limits import ClientQuota, Limit, Quotas, QuotaSettings
from bayou.core.quotas.store import QUOTAS_LOG, Alteration, QuotaStore

__all__ = [
    "CLIENT_ID",
    "CONNECTION_CREATION_RATE",
    "CONSUMER_BYTE_RATE",
    "CONTROLLER_MUTATION_RATE",
    "IP",
    "PRODUCER_BYTE_RATE",
    "QUOTAS_LOG",
    "REQUEST_PERCENTAGE",
    "USER",
    "Alteration",
    "ClientQuota",
    "DescribeFilter",
    "Entity",
    "Limit",
    "QuotaRequestError",
    "QuotaSettings",
    "QuotaStore",
    "Quotas",
    "Values",
]
