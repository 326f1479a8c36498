"""Live streams of a topic for dashboards: Server-Sent Events and WebSocket.

Theory of operation
-------------------
A stream follows every partition of one topic with a core ``Cursor`` each, from a start
point (``from``): ``earliest``, ``latest`` (the default), an offset (the same in every
partition, clamped to the log), or an ISO-8601 time (the first record at or after it — an
engine lookup, off the event loop).  It reads what is there, sends it, and waits on
``Core.wait_any`` until an append lands; every ``KEEPALIVE_S`` without data an SSE comment
keeps proxies from closing the connection.  A broker shutdown wakes and ends every stream,
and so does the topic's deletion.

Resuming: each event's id is the *event id* after it — the next offset of every partition,
``"0:17,1:4"`` — so a client that reconnects with ``Last-Event-ID`` (browsers' EventSource do
it by themselves) continues exactly after the last event it saw, in every partition (an
offset that has left the log meanwhile starts at the log's start, or end).  The WebSocket
takes the same id as the ``last_event_id`` query parameter and sends it as each message's
``id``.

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

from bayou.core import Core, Cursor, StartSpec
from bayou.errors import UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.payloads import decode_headers
from bayou.gateways.http.produce import topic_meta
from bayou.gateways.pacing import hold, throttle_ms

KEEPALIVE_S = 15.0
READ_BYTES = 256 * 1024
EventId = dict[int, int]  # partition → next offset


def parse_cursor(text: str, partitions: int) -> EventId:
    """``"0:17,1:4"`` → ``{0: 17, 1: 4}``; 400 when malformed."""
    cursor: EventId = {}
    try:
        for part in text.split(","):
            p, o = part.split(":")
            partition, offset = int(p), int(o)
            if not 0 <= partition < partitions or offset < 0:
                raise ValueError
            cursor[partition] = offset
    except ValueError:
        raise errors.bad_request(
            f"Invalid event id {text!r}: expected partition:offset pairs such as 0:17,1:4."
        ) from None
    return cursor


def format_cursor(cursor: EventId) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


def start_spec(start: str) -> StartSpec:
    """``from=``: earliest, latest, an offset or an ISO-8601 time; 400 otherwise."""
    spec = start.strip().lower()
    if spec == "earliest":
        return StartSpec.earliest()
    if spec == "latest":
        return StartSpec.latest()
    if spec.isascii() and spec.isdigit():
        return StartSpec("offset", int(spec))
    return StartSpec("timestamp", _parse_time(start))


async def start_cursors(
    core: Core, topic: str, start: str, last_event_id: str | None
) -> dict[int, Cursor]:
    """A cursor per partition, where ``Last-Event-ID`` says or else ``from``."""
    meta = await topic_meta(core, topic)
    resume = parse_cursor(last_event_id, meta.partitions) if last_event_id else {}
    spec: StartSpec | None = None
    cursors: dict[int, Cursor] = {}
    try:
        for p in range(meta.partitions):
            if p in resume:  # out of the log by now: the cursor resets it when it reads
                cursors[p] = core.cursor(topic, p, resume[p])
            else:
                spec = spec or start_spec(start)
                cursors[p] = await core.cursor_at(topic, p, spec)
    except UnknownTopicOrPartition:
        raise errors.topic_not_found(topic) from None
    return cursors


def _parse_time(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise errors.bad_request(
            f"Invalid from={text!r}: expected earliest, latest, an offset or an ISO-8601 time."
        ) from None
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


async def follow(
    core: Core,
    topic: str,
    cursors: dict[int, Cursor],
    *,
    binary: bool,
    principal: str | None = None,
) -> AsyncIterator[list[tuple[str, str]] | None]:
    """Yield lists of (event id, record JSON) as records land; None after a quiet
    ``KEEPALIVE_S``.  Ends when the broker stops or the topic goes away.  A fetch quota of
    ``principal``'s holds the next read back for the throttle time its bytes leave, as
    the HTTP door's consumers are held (``gateways/pacing.py``)."""
    following = [cursors[p] for p in sorted(cursors)]
    traffic = core.metrics.door("http")
    while not core.stopping:
        events: list[tuple[str, str]] = []
        positions = {p: c.position for p, c in cursors.items()}
        try:
            for cursor in following:
                p = cursor.partition
                records = await cursor.read(READ_BYTES)
                if records:
                    traffic.sent_records(topic, records)
                for record in records:
                    positions[p] = record.offset + 1
                    event = {
                        "topic": topic,
                        "partition": p,
                        "offset": record.offset,
                        "timestamp": record.timestamp,
                        "key": _field(record.key, binary),
                        "value": _field(record.value, binary),
                    }
                    if record.headers:
                        event["headers"] = decode_headers(record.headers)
                    events.append(
                        (
                            format_cursor(positions),
                            json.dumps(event, separators=(",", ":"), ensure_ascii=False),
                        )
                    )
                positions[p] = cursor.position
            if events:
                if core.quotas.active:
                    fetched = sum(len(data) for _id, data in events)
                    await hold(throttle_ms(core.quotas, principal, "", fetched=fetched))
                yield events
                continue
            woken = await core.wait_any(following, KEEPALIVE_S)
        except UnknownTopicOrPartition:
            return  # the topic was deleted under the stream
        if not woken and not core.stopping:
            yield None


async def sse_body(
    core: Core,
    topic: str,
    cursors: dict[int, Cursor],
    *,
    binary: bool,
    principal: str | None = None,
) -> AsyncIterator[bytes]:
    """The ``text/event-stream`` body: one ``id``/``data`` event per record."""
    start = format_cursor({p: c.position for p, c in cursors.items()})
    yield f"retry: 1000\n: following {topic} from {start}\n\n".encode()
    async for events in follow(core, topic, cursors, binary=binary, principal=principal):
        if events is None:
            yield b": keep-alive\n\n"
        else:
            yield "".join(f"id: {i}\ndata: {d}\n\n" for i, d in events).encode()
