"""Checks that need the records themselves, not just the batch header: the rare path.

Appends normally read only batch headers.  A compacted topic (``cleanup.policy`` with
``compact``) must also refuse records without a key — the cleaner keeps the last record per
key, and a keyless one has none — so only such topics decode their records here, as Kafka's
``LogValidator`` does.  A payload with keyless records is refused whole with INVALID_RECORD
(nothing is written) and ``RecordErrors.record_errors`` lists each one: its index among the
payload's records (counted across its batches; a client sends one batch per partition, where
this is Kafka's index within the batch) and Kafka's message, "Compacted topic cannot accept
message without key in topic partition <topic>-<partition>.".  Control batches (transaction
markers) carry keys of their own and are not checked.
"""

from __future__ import annotations

from collections.abc import Sequence

from bayou.errors import RecordErrors
from bayou.protocol.kafka.records import BatchHeader, iter_records

SHOWN = 3  # errors quoted in the summary message, as Kafka quotes at most three


def reject_keyless(
    topic: str, partition: int, buf: bytearray | memoryview, headers: Sequence[BatchHeader]
) -> None:
    """Raise RecordErrors if any data record in ``buf`` (validated batches) has no key."""
    reason = (
        f"Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    )
    errors: list[tuple[int, str]] = []
    index = 0
    pos = 0
    view = memoryview(buf)
    for h in headers:
        if h.is_control:
            index += h.records_count
        else:
            for record in iter_records(view[pos : pos + h.size]):
                if record.key is None:
                    errors.append((index, reason))
                index += 1
        pos += h.size
    if errors:
        quoted = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:SHOWN])
        raise RecordErrors(
            f"One or more records have been rejected due to {len(errors)} record errors in "
            f"total, and only showing the first three errors at most: [{quoted}]",
            errors,
        )
