"""Helpers the Kafka transaction handlers share: the driver, Kafka's per-version errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayou.core.transactions import TxnCoordinatorError
from bayou.errors import ErrorCode

if TYPE_CHECKING:
    from bayou.core.transactions import TxnDriver
    from bayou.gateways.kafka.context import RequestContext


def txn_driver(ctx: RequestContext) -> TxnDriver:
    """The transaction coordinator's driver; COORDINATOR_NOT_AVAILABLE while not running."""
    driver = ctx.core.transactions
    if driver is None or ctx.core.stopping:
        raise TxnCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    return driver


def for_version(code: ErrorCode, version: int, fenced_since: int) -> ErrorCode:
    """PRODUCER_FENCED as clients of this version understand it: versions before
    ``fenced_since`` knew only INVALID_PRODUCER_EPOCH (Kafka's KafkaApis does the same)."""
    if code == ErrorCode.PRODUCER_FENCED and version < fenced_since:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return code
