"""Reading records off the log for HTTP consumers, SSE and WebSocket streams.

Off the Kafka hot path: ``PartitionLog.read`` returns whole stored batches, and
``iter_records`` decodes them.  Control batches (transaction markers) are skipped, and the
position always moves past the last batch looked at, so compacted gaps and markers never
stall a reader.  Reads go through ``BrokerState.read``, as the Kafka Fetch path does: from
the page cache on the event loop, from a worker thread when the data is cold.
"""

from __future__ import annotations

from bayou.gateways.legacy_state import LegacyState as BrokerState
from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records
from bayou.storage import PartitionLog

# A stand-in cost per record on top of its key and value, for the max_bytes budget.
RECORD_OVERHEAD = 16


async def read_records(
    state: BrokerState, log: PartitionLog, position: int, max_bytes: int,
    max_records: int = 1 << 30,
) -> tuple[list[DecodedRecord], int]:
    """Records at or after ``position`` (at least one when there is one, then up to
    ``max_bytes`` of keys and values and ``max_records``), and the next position.

    Raises ``OffsetOutOfRange`` when ``position`` is outside the log.
    """
    data = await state.read(log, position, max(max_bytes, 1))
    out: list[DecodedRecord] = []
    used = 0
    next_position = position
    view = memoryview(data)
    for pos, header in iter_batches(view):
        if header.last_offset < next_position:
            continue
        if not header.is_control:
            for record in iter_records(view[pos : pos + header.size]):
                if record.offset < next_position:
                    continue
                size = RECORD_OVERHEAD + len(record.key or b"") + len(record.value or b"")
                if out and (used + size > max_bytes or len(out) >= max_records):
                    return out, next_position
                out.append(record)
                used += size
                next_position = record.offset + 1
        next_position = max(next_position, header.last_offset + 1)
    return out, next_position
