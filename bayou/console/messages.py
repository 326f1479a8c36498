"""The message browser: a page of a topic's records from the newest, the beginning, an offset
or a time, per partition or all, optionally filtered in the broker, decoded for reading.

The scan (``scans.py``) is bounded in records shown, bytes read and time, and says which
bound stopped it.  "Newest" reads the last ``limit`` records of each partition (the last
``NEWEST_WINDOW`` when filtering) and shows them newest first; every other start reads
forward and shows the earliest matches first, merged over partitions by timestamp.

The page streams: its top (the form, a progress bar and a Cancel button) is sent at once,
then while the scan runs a line of script every ``PROGRESS_S`` with how far it got, then
the results and the rest of the page.  So the page still works with a reload and a link,
and the scan runs only as long as its page is open: a browser that goes away cancels it,
and the Cancel button stops it in the broker (``POST /console/scans/{id}/cancel``), the
results saying so.  A bad filter or start is refused (422) before anything is streamed.

Live tail (``/console/topics/{name}/tail``, SSE) follows the chosen partitions from their
ends with the same filter and decoding; the page adds the rows on top.

The same query with ``format=jsonl`` or ``format=csv`` downloads what the page shows (one
object or row per record: partition, offset, timestamp, key, value, headers as decoded).  A
record can be produced again, edited or not, to the same or another topic: its form is
prefilled from the record and the write is one batch through ``Core.append_many``, as the
HTTP door's produce.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from bayou.console.filters import FilterError, Predicate, parse_filter
from bayou.console.properties import protocol_properties
from bayou.console.scans import READ_BYTES, Scan, Scans, open_cursors, scan
from bayou.console.topics import topic_url
from bayou.console.web import Access, form, page_text, render
from bayou.core import Core
from bayou.core.cursor import Cursor, StartSpec
from bayou.core.partitioner import Partitioner
from bayou.core.security.acl import AclOperation
from bayou.errors import KafkaError
from bayou.gateways.http.auth import principal_of
from bayou.protocol.kafka.records import DecodedRecord, Record, build_batch

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
PROGRESS_S = 0.25  # how often a scanning page hears how far its scan got
RESULTS_MARKER = "<!-- scan results -->"
STARTS = ("newest", "beginning", "offset", "time")
DOWNLOADS = ("jsonl", "csv")
MAX_REPRODUCE_BYTES = 1024 * 1024
DECODINGS = ("auto", "json", "text", "hex", "base64")


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


def add_routes(router: APIRouter, core: Core) -> None:
    scans = Scans()

    @router.get("/topics/{name}/messages")
    async def messages_page(request: Request, name: str) -> Response:
        meta = core.topics().get(name)
        if meta is None or not Access(core.security, request).topic(AclOperation.READ, name):
            return render(request, "missing.html", {"what": f"Topic {name!r}"}, 404)
        q = request.query_params
        chosen = {
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
            "form": chosen,
            "error": "",
            "rows": [],
            "scan": None,
        }
        try:
            limit = max(1, min(MAX_LIMIT, int(chosen["limit"])))
            if chosen["partition"] == "all":
                partitions = list(range(meta.partitions))
            else:
                partitions = [int(chosen["partition"])]
                if not 0 <= partitions[0] < meta.partitions:
                    raise ValueError(f"partition {partitions[0]} does not exist")
            start: StartSpec | None = None
            if chosen["start"] == "beginning":
                start = StartSpec.earliest()
            elif chosen["start"] == "offset":
                start = StartSpec("offset", int(chosen["offset"]))
            elif chosen["start"] == "time":
                if not chosen["time"]:
                    raise ValueError("pick a date and time to start from")
                start = StartSpec("timestamp", parse_time(chosen["time"]))
            predicate = parse_filter(chosen["filter"])
        except FilterError as exc:
            context["error"] = f"Filter: {exc}"
            return render(request, "messages.html", context, 422)
        except ValueError as exc:
            context["error"] = f"Invalid input: {exc}"
            return render(request, "messages.html", context, 422)
        try:
            cursors = await open_cursors(core, name, partitions, start, predicate, limit)
        except KafkaError as exc:
            context["error"] = exc.message
            return render(request, "messages.html", context, 422)
        how = chosen["decode"]
        download = q.get("format")
        if download in DOWNLOADS:
            found = await scan(cursors, start is None, predicate, limit, request.is_disconnected)
            return downloaded(name, [row_of(i, r, how) for i, r in found.records], download)
        scan_id, progress = scans.begin(principal_of(request))
        context["scan_id"] = scan_id
        head, _, foot = page_text(request, "messages.html", context).partition(RESULTS_MARKER)
        return StreamingResponse(
            scanning(
                request,
                context,
                scan_id,
                progress,
                (cursors, start is None, predicate, limit),
                head,
                foot,
            ),
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def scanning(
        request: Request,
        context: dict[str, Any],
        scan_id: str,
        progress: Scan,
        job: tuple[list[Cursor], bool, Predicate | None, int],
        head: str,
        foot: str,
    ) -> AsyncIterator[str]:
        """The page around a running scan: its top (the form, the progress bar and the
        Cancel button), a line of progress every ``PROGRESS_S``, then the results and the
        rest.  A browser that goes away cancels this generator, and so the scan."""
        cursors, newest, predicate, limit = job
        task = asyncio.create_task(scan(cursors, newest, predicate, limit, result=progress))
        try:
            yield head
            while not (await asyncio.wait({task}, timeout=PROGRESS_S))[0]:
                yield f"<script>consoleScan.progress({script_json(progress.progress())})</script>\n"
            try:
                found = task.result()
            except KafkaError as exc:  # the topic went away under the scan
                context["scan_error"] = exc.message
                found = progress
            context["scan"] = found
            context["rows"] = [row_of(i, r, context["form"]["decode"]) for i, r in found.records]
            yield "<script>consoleScan.done()</script>\n"
            yield page_text(request, "messages_results.html", context)
            yield foot
        finally:
            task.cancel()
            scans.end(scan_id)

    @router.post("/scans/{scan_id}/cancel")
    async def cancel_scan(request: Request, scan_id: str) -> Response:
        """The Cancel button of a scanning page: the scan stops at its next read."""
        if scans.cancel(scan_id, principal_of(request)):
            return Response(status_code=204)
        return Response("No such scan running.", 404)

    @router.get("/topics/{name}/tail")
    async def tail_stream(request: Request, name: str) -> Response:
        meta = core.topics().get(name)
        if meta is None or not Access(core.security, request).topic(AclOperation.READ, name):
            return Response("No such topic.", 404)
        q = request.query_params
        try:
            chosen = q.get("partition", "all")
            partitions = list(range(meta.partitions)) if chosen == "all" else [int(chosen)]
            if not all(0 <= p < meta.partitions for p in partitions):
                raise ValueError("no such partition")
            predicate = parse_filter(q.get("filter", ""))
        except ValueError as exc:  # FilterError too
            return Response(str(exc), 422)
        how = q.get("decode", "auto") if q.get("decode") in DECODINGS else "auto"
        return StreamingResponse(
            tail(core, name, partitions, predicate, how),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/topics/{name}/produce")
    async def produce_form(request: Request, name: str) -> Response:
        q = request.query_params
        values = {"topic": name, "key": "", "value": "", "headers": "[]"}
        try:
            partition, offset = int(q.get("partition", "")), int(q.get("offset", ""))
        except ValueError:
            partition = offset = -1
        access = Access(core.security, request)
        if partition >= 0 and name in core.topics() and access.topic(AclOperation.READ, name):
            try:
                record = await core.cursor(name, partition, offset).record_at(offset)
            except KafkaError:
                record = None
            if record is not None:
                values["key"] = _text(record.key)
                values["value"] = _text(record.value)
                values["headers"] = json.dumps([[h, _text(v)] for h, v in record.headers])
        return produce_page(request, name, values)

    def produce_page(
        request: Request, name: str, values: dict[str, str], error: str = "", status: int = 200
    ) -> Response:
        context = {
            "page": "topics",
            "name": name,
            "url": topic_url(name),
            "values": values,
            "topics": sorted(core.topics()),
            "error": error,
        }
        return render(request, "produce.html", context, status)

    @router.post("/topics/{name}/produce")
    async def produce(request: Request, name: str) -> Response:
        values = await form(request)
        target = values.get("topic", "")
        meta = core.topics().get(target)
        if meta is None:
            return produce_page(request, name, values, f"Topic {target!r} does not exist.", 422)
        if not Access(core.security, request).topic(AclOperation.WRITE, target):
            return produce_page(request, name, values, "Not authorized to write there.", 403)
        try:
            headers = [
                (str(h), None if v is None else str(v).encode())
                for h, v in json.loads(values.get("headers") or "[]")
            ]
        except (ValueError, TypeError):
            error = 'Headers are a JSON list of [name, value] pairs, e.g. [["source", "console"]].'
            return produce_page(request, name, values, error, 422)
        key = values.get("key", "").encode() or None
        value = values.get("value", "").encode()
        if len(value) + len(key or b"") > MAX_REPRODUCE_BYTES:
            return produce_page(request, name, values, "The record is too large.", 413)
        partition = Partitioner().partition(target, key, meta.partitions)
        batch = build_batch([Record(core.clock_ms(), key, value, headers)])
        [result] = await core.append_many([(target, partition, batch)])
        if isinstance(result, KafkaError):
            return produce_page(request, name, values, result.message, 422)
        core.metrics.door("http").appended([(target, partition, batch)], [result])
        return RedirectResponse(
            f"{topic_url(target)}/messages?partition={partition}&start=offset"
            f"&offset={result.base_offset}",
            status_code=303,
        )


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    return json.dumps(value).replace("<", "\\u003c")


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "replace")


def _plain(shown: dict[str, Any]) -> str | None:
    """A decoded field as a download holds it: JSON compact, null as None."""
    if shown["kind"] == "null":
        return None
    if shown["kind"] == "json":
        return json.dumps(json.loads(shown["text"]), ensure_ascii=False, separators=(",", ":"))
    return str(shown["text"])


def downloaded(topic: str, rows: list[dict[str, Any]], fmt: str) -> Response:
    """The page's records as a JSON-lines or CSV attachment."""
    out = io.StringIO()
    if fmt == "jsonl":
        for row in rows:
            item = {
                "partition": row["partition"],
                "offset": row["offset"],
                "timestamp": row["time"],
                "key": _plain(row["key"]),
                "value": _plain(row["value"]),
                "headers": {h: _plain(v) for h, v in row["headers"]},
            }
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
        media = "application/x-ndjson"
    else:
        writer = csv.writer(out)
        writer.writerow(["partition", "offset", "timestamp", "key", "value", "headers"])
        for row in rows:
            headers = json.dumps({h: _plain(v) for h, v in row["headers"]}, ensure_ascii=False)
            writer.writerow(
                [
                    row["partition"],
                    row["offset"],
                    row["time"],
                    _plain(row["key"]),
                    _plain(row["value"]),
                    headers,
                ]
            )
        media = "text/csv"
    return Response(
        out.getvalue(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{topic}.{fmt}"'},
    )


TAIL_TICK_S = 0.5
TAIL_RECORDS_PER_TICK = 1000


async def tail(
    core: Core, topic: str, partitions: list[int], predicate: Predicate | None, how: str
) -> AsyncIterator[str]:
    """New records of ``partitions`` as they land (from the ends now), filtered and decoded,
    as SSE events of row lists; at most ``TAIL_RECORDS_PER_TICK`` rows read per tick (more
    are skipped: the tail keeps up with the log rather than falling behind)."""
    cursors = [core.cursor(topic, p, core.partition(topic, p).log_end_offset) for p in partitions]
    yield "retry: 2000\n\n"
    while not core.stopping:
        await core.wait_any(cursors, TAIL_TICK_S)
        rows: list[dict[str, Any]] = []
        budget = TAIL_RECORDS_PER_TICK
        try:
            for cursor in cursors:
                if cursor.end() - cursor.position > budget:
                    cursor.position = cursor.end() - budget
                records = await cursor.read(READ_BYTES, budget) if budget > 0 else []
                budget -= len(records)
                for r in records:
                    if predicate is None or predicate(r):
                        rows.append(row_of(cursor.partition, r, how))
        except KafkaError:
            return  # the topic went away
        if rows:
            yield f"data: {json.dumps(rows)}\n\n"


def row_of(partition: int, r: DecodedRecord, how: str) -> dict[str, Any]:
    """A record as the page shows it."""
    return {
        "partition": partition,
        "offset": r.offset,
        "time": datetime.fromtimestamp(r.timestamp / 1000, UTC).isoformat(timespec="milliseconds"),
        "key": decode(r.key, how),
        "value": decode(r.value, how),
        "headers": [(h, decode(v, how)) for h, v in r.headers],
        "protocols": [
            {"protocol": p.protocol, "items": list(p.items)} for p in protocol_properties(r.headers)
        ],
    }
