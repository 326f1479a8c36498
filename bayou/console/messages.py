"""The message browser: a page of a topic's records from the newest, the beginning, an offset
or a time, per partition or all, optionally filtered in the broker, decoded for reading.

A scan is bounded three ways and says which bound stopped it: the records it shows
(``limit``), the bytes it reads (``SCAN_BYTES``) and its time (``SCAN_S``); reading goes
through core ``Cursor``s, the read path every door uses.  "Newest" reads the last
``limit`` records of each partition (the last ``NEWEST_WINDOW`` when filtering) and shows
them newest first; every other start reads forward and shows the earliest matches first,
merged over partitions by timestamp.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from bayou.console.filters import FilterError, Predicate, parse_filter
from bayou.console.topics import topic_url
from bayou.console.web import Access, render
from bayou.core import Core
from bayou.core.cursor import StartSpec
from bayou.core.security.acl import AclOperation
from bayou.errors import KafkaError
from bayou.protocol.kafka.records import DecodedRecord

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SCAN_BYTES = 64 * 1024 * 1024
SCAN_S = 5.0
READ_BYTES = 1024 * 1024
NEWEST_WINDOW = 10_000
STARTS = ("newest", "beginning", "offset", "time")
DECODINGS = ("auto", "json", "text", "hex", "base64")


@dataclass
class Scan:
    records: list[tuple[int, DecodedRecord]] = field(default_factory=list)
    scanned: int = 0
    scanned_bytes: int = 0
    stopped: str = ""  # "", "bytes", "time"


def decode(data: bytes | None, how: str) -> dict[str, Any]:
    """How a key, value or header shows: ``kind`` (json, text, hex, base64, null) and
    ``text``."""
    if data is None:
        return {"kind": "null", "text": "null"}
    if how in ("auto", "json"):
        try:
            return {
                "kind": "json",
                "text": json.dumps(json.loads(data), indent=2, ensure_ascii=False),
            }
        except ValueError:
            if how == "json":
                return {"kind": "hex", "text": binascii.hexlify(data, " ").decode()}
    if how in ("auto", "text"):
        try:
            return {"kind": "text", "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    if how == "base64":
        return {"kind": "base64", "text": base64.b64encode(data).decode()}
    return {"kind": "hex", "text": binascii.hexlify(data, " ").decode()}


def parse_time(text: str) -> int:
    """A ``datetime-local`` value (taken as UTC) or an ISO 8601 time, as epoch ms."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def scan(
    core: Core,
    topic: str,
    partitions: list[int],
    start: StartSpec | None,
    predicate: Predicate | None,
    limit: int,
) -> Scan:
    """Matching records of ``partitions`` from ``start`` (None: the newest), bounded."""
    result = Scan()
    deadline = time.monotonic() + SCAN_S
    for index in partitions:
        if start is None:
            p = core.partition(topic, index)
            window = NEWEST_WINDOW if predicate is not None else limit
            cursor = core.cursor(topic, index, max(p.log_start_offset, p.log_end_offset - window))
        else:
            cursor = await core.cursor_at(topic, index, start)
        found: list[tuple[int, DecodedRecord]] = []
        while cursor.position < cursor.end():
            if result.scanned_bytes >= SCAN_BYTES:
                result.stopped = "bytes"
                break
            if time.monotonic() > deadline:
                result.stopped = "time"
                break
            records = await cursor.read(READ_BYTES)
            if not records:
                break
            for record in records:
                result.scanned += 1
                result.scanned_bytes += len(record.key or b"") + len(record.value or b"")
                if predicate is None or predicate(record):
                    found.append((index, record))
            if start is not None and len(found) >= limit:
                break
        result.records.extend(found[-limit:] if start is None else found[:limit])
        if result.stopped:
            break
    if start is None:
        result.records.sort(key=lambda r: (r[1].timestamp, r[1].offset), reverse=True)
    else:
        result.records.sort(key=lambda r: (r[1].timestamp, r[0], r[1].offset))
    del result.records[limit:]
    return result


def add_routes(router: APIRouter, core: Core) -> None:
    @router.get("/topics/{name}/messages")
    async def messages_page(request: Request, name: str) -> Response:
        meta = core.topics().get(name)
        if meta is None or not Access(core.security, request).topic(AclOperation.READ, name):
            return render(request, "missing.html", {"what": f"Topic {name!r}"}, 404)
        q = request.query_params
        form = {
            "partition": q.get("partition", "all"),
            "start": q.get("start", "newest") if q.get("start") in STARTS else "newest",
            "offset": q.get("offset", "0"),
            "time": q.get("time", ""),
            "filter": q.get("filter", ""),
            "decode": q.get("decode", "auto") if q.get("decode") in DECODINGS else "auto",
            "limit": q.get("limit", str(DEFAULT_LIMIT)),
        }
        context: dict[str, Any] = {
            "page": "topics",
            "name": name,
            "url": topic_url(name),
            "partition_count": meta.partitions,
            "form": form,
            "error": "",
            "rows": [],
            "scan": None,
        }
        try:
            limit = max(1, min(MAX_LIMIT, int(form["limit"])))
            if form["partition"] == "all":
                partitions = list(range(meta.partitions))
            else:
                partitions = [int(form["partition"])]
                if not 0 <= partitions[0] < meta.partitions:
                    raise ValueError(f"partition {partitions[0]} does not exist")
            start: StartSpec | None = None
            if form["start"] == "beginning":
                start = StartSpec.earliest()
            elif form["start"] == "offset":
                start = StartSpec("offset", int(form["offset"]))
            elif form["start"] == "time":
                if not form["time"]:
                    raise ValueError("pick a date and time to start from")
                start = StartSpec("timestamp", parse_time(form["time"]))
            predicate = parse_filter(form["filter"])
        except FilterError as exc:
            context["error"] = f"Filter: {exc}"
            return render(request, "messages.html", context, 422)
        except ValueError as exc:
            context["error"] = f"Invalid input: {exc}"
            return render(request, "messages.html", context, 422)
        try:
            found = await scan(core, name, partitions, start, predicate, limit)
        except KafkaError as exc:
            context["error"] = exc.message
            return render(request, "messages.html", context, 422)
        how = form["decode"]
        context["scan"] = found
        context["rows"] = [
            {
                "partition": index,
                "offset": r.offset,
                "time": datetime.fromtimestamp(r.timestamp / 1000, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "key": decode(r.key, how),
                "value": decode(r.value, how),
                "headers": [(h, decode(v, how)) for h, v in r.headers],
            }
            for index, r in found.records
        ]
        return render(request, "messages.html", context)
