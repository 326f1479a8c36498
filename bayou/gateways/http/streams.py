"""Live streams of a topic for dashboards: Server-Sent Events and WebSocket.

Theory of operation
-------------------
A stream follows every partition of one topic from a start point (``from``): ``earliest``,
``latest`` (the default), an offset (the same in every partition, clamped to the log), or an
ISO-8601 time (the first record at or after it, by ``offset_for_timestamp``).  It reads what
is there (``reading.read_records``), sends it, and parks on ``waiters.wait_any`` until an
append lands; every ``KEEPALIVE_S`` without data an SSE comment keeps proxies from closing
the connection.  A broker shutdown wakes and ends every stream.

Resuming: each event's id is the *cursor* after it — the next offset of every partition,
``"0:17,1:4"`` — so a client that reconnects with ``Last-Event-ID`` (browsers' EventSource do
it by themselves) continues exactly after the last event it saw, in every partition.  The
WebSocket takes the same cursor as the ``last_event_id`` query parameter and sends it as each
message's ``id``.

Each event's data is the record as JSON: ``topic``, ``partition``, ``offset``, ``timestamp``,
``key``, ``value`` and, when the record has any, ``headers`` (``{"name", "value"}``, values
base64, as in ``payloads``).  With ``format=json`` (the default) a key or value that is JSON text is
embedded as JSON, anything else as a UTF-8 string; with ``format=binary`` both are base64.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bayou.errors import OffsetOutOfRange, UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.payloads import decode_headers
from bayou.gateways.http.produce import topic_meta
from bayou.gateways.http.reading import read_records
from bayou.gateways.legacy_state import LegacyState as BrokerState

KEEPALIVE_S = 15.0
READ_BYTES = 256 * 1024
Cursor = dict[int, int]


def parse_cursor(text: str, partitions: int) -> Cursor:
    """``"0:17,1:4"`` → ``{0: 17, 1: 4}``; 400 when malformed."""
    cursor: Cursor = {}
    try:
        for part in text.split(","):
            p, o = part.split(":")
            partition, offset = int(p), int(o)
            if not 0 <= partition < partitions or offset < 0:
                raise ValueError
            cursor[partition] = offset
    except ValueError:
        raise errors.bad_request(f"Invalid event id {text!r}: expected partition:offset "
                                 "pairs such as 0:17,1:4.") from None
    return cursor


def format_cursor(cursor: Cursor) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


def start_cursor(state: BrokerState, topic: str, start: str, last_event_id: str | None
                 ) -> Cursor:
    """Where a stream starts, from ``Last-Event-ID`` or else ``from``."""
    meta = topic_meta(state, topic)
    logs = [state.logs.partition(topic, p) for p in range(meta.partitions)]
    cursor: Cursor = {}
    if last_event_id:
        cursor = parse_cursor(last_event_id, meta.partitions)
    spec = start.strip().lower()
    for p, log in enumerate(logs):
        if p in cursor:
            continue
        if spec == "earliest":
            cursor[p] = log.log_start_offset
        elif spec == "latest":
            cursor[p] = log.log_end_offset
        elif spec.isdigit():
            cursor[p] = min(max(int(spec), log.log_start_offset), log.log_end_offset)
        else:
            found = log.offset_for_timestamp(_parse_time(start))
            cursor[p] = log.log_end_offset if found is None else found[0]
    return cursor


def _parse_time(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise errors.bad_request(f"Invalid from={text!r}: expected earliest, latest, an "
                                 "offset or an ISO-8601 time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _field(data: bytes | None, binary: bool) -> Any:
    if data is None:
        return None
    if binary:
        return base64.b64encode(data).decode("ascii")
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


async def follow(state: BrokerState, topic: str, cursor: Cursor, *, binary: bool
                 ) -> AsyncIterator[list[tuple[str, str]] | None]:
    """Yield lists of (cursor id, record JSON) as records land; None after a quiet
    ``KEEPALIVE_S``.  Ends when the broker stops or the topic goes away."""
    keys = [(topic, p) for p in sorted(cursor)]
    while not state.stopping:
        events: list[tuple[str, str]] = []
        for _, p in keys:
            try:
                log = state.logs.partition(topic, p)
                found, next_position = await read_records(state, log, cursor[p], READ_BYTES)
            except UnknownTopicOrPartition:
                return  # the topic was deleted under the stream
            except OffsetOutOfRange:
                cursor[p] = log.log_start_offset if cursor[p] < log.log_start_offset \
                    else log.log_end_offset
                continue
            for record in found:
                cursor[p] = record.offset + 1
                event = {
                    "topic": topic, "partition": p, "offset": record.offset,
                    "timestamp": record.timestamp, "key": _field(record.key, binary),
                    "value": _field(record.value, binary),
                }
                if record.headers:
                    event["headers"] = decode_headers(record.headers)
                events.append((format_cursor(cursor), json.dumps(
                    event, separators=(",", ":"), ensure_ascii=False)))
            cursor[p] = next_position
        if events:
            yield events
            continue
        if not await state.waiters.wait_any(keys, KEEPALIVE_S) and not state.stopping:
            yield None


async def sse_body(state: BrokerState, topic: str, cursor: Cursor, *, binary: bool
                   ) -> AsyncIterator[bytes]:
    """The ``text/event-stream`` body: one ``id``/``data`` event per record."""
    yield f"retry: 1000\n: following {topic} from {format_cursor(cursor)}\n\n".encode()
    async for events in follow(state, topic, cursor, binary=binary):
        if events is None:
            yield b": keep-alive\n\n"
        else:
            yield "".join(f"id: {i}\ndata: {d}\n\n" for i, d in events).encode()
