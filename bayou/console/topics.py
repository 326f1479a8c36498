"""Topic pages: the list with search and the create form, one topic's partitions and
configs (with their sources), and the changes an operator makes — configs, more partitions,
deletion with the name typed again.

Every change goes through the same engine calls as the Kafka admin APIs, so a config is
validated by the same rules and a refusal reads the same; the error is shown beside the
form, the values the user typed kept.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from bayou.config import TOPIC_CONFIGS
from bayou.console.web import Access, form, render
from bayou.core import Core
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.errors import KafkaError
from bayou.storage.engine import Segmented

MAX_CONFIG_LINES = 64


def topic_url(name: str) -> str:
    return f"/console/topics/{quote(name, safe='')}"


def parse_configs(text: str) -> dict[str, str]:
    """``name=value`` lines (blank lines and ``#`` comments ignored); ValueError explains."""
    configs: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines()[:MAX_CONFIG_LINES], start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"line {number}: expected name=value, got {line!r}")
        configs[name.strip()] = value.strip()
    return configs


def config_rows(core: Core, overrides: dict[str, Any]) -> list[dict[str, str]]:
    """Every topic config: its effective value and where it comes from."""
    engine = core.engine
    effective = engine.resolve_config(overrides)
    layers = (
        ("topic", overrides),
        ("dynamic broker", engine.dynamic.broker),
        ("dynamic default", engine.dynamic.default),
        ("static broker", engine.static_defaults),
    )
    rows = []
    for name, definition in TOPIC_CONFIGS.items():
        source = next((label for label, values in layers if name in values), "default")
        rows.append(
            {
                "name": name,
                "value": definition.render(effective[name]),
                "source": source,
                "doc": definition.doc,
            }
        )
    return rows


def partition_rows(core: Core, name: str, count: int) -> list[dict[str, int]]:
    rows = []
    for index in range(count):
        try:
            p = core.partition(name, index)
        except KafkaError:
            continue
        rows.append(
            {
                "partition": index,
                "start": p.log_start_offset,
                "end": p.log_end_offset,
                "size": p.size_bytes,
                "segments": p.segment_count if isinstance(p, Segmented) else 0,
            }
        )
    return rows


def add_routes(router: APIRouter, core: Core) -> None:
    def listing(request: Request, query: str) -> list[dict[str, Any]]:
        access = Access(core.security, request)
        rows = []
        for name, meta in sorted(core.topics().items()):
            if query and query.lower() not in name.lower():
                continue
            if not access.may(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
                continue
            parts = partition_rows(core, name, meta.partitions)
            rows.append(
                {
                    "name": name,
                    "url": topic_url(name),
                    "partitions": meta.partitions,
                    "messages": sum(r["end"] - r["start"] for r in parts),
                    "size": sum(r["size"] for r in parts),
                }
            )
        return rows

    def list_page(
        request: Request, values: dict[str, str] | None = None, error: str = "", status: int = 200
    ) -> Response:
        query = request.query_params.get("q", "").strip()
        context = {
            "page": "topics",
            "query": query,
            "topics": listing(request, query),
            "new": values or {"partitions": "1"},
            "error": error,
        }
        return render(request, "topics.html", context, status)

    @router.get("/topics")
    async def topics_page(request: Request) -> Response:
        return list_page(request)

    @router.post("/topics")
    async def create(request: Request) -> Response:
        values = await form(request)
        name = values.get("name", "").strip()
        if not Access(core.security, request).topic(AclOperation.CREATE, name):
            return list_page(request, values, f"Not authorized to create topic {name!r}.", 403)
        try:
            partitions = int(values.get("partitions", "1"))
            configs = parse_configs(values.get("configs", ""))
        except ValueError as exc:
            return list_page(request, values, f"Invalid input: {exc}", 422)
        try:
            await core.create_topic(name, partitions, configs)
        except KafkaError as exc:
            return list_page(request, values, exc.message, 422)
        return RedirectResponse(topic_url(name), status_code=303)

    def topic_page(request: Request, name: str, error: str = "", status: int = 200) -> Response:
        meta = core.topics().get(name)
        access = Access(core.security, request)
        if meta is None or not access.may(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
            return render(request, "missing.html", {"what": f"Topic {name!r}"}, 404)
        context = {
            "page": "topics",
            "name": name,
            "url": topic_url(name),
            "meta": meta,
            "partitions": partition_rows(core, name, meta.partitions),
            "configs": config_rows(core, meta.configs),
            "error": error,
        }
        return render(request, "topic.html", context, status)

    @router.get("/topics/{name}")
    async def describe(request: Request, name: str) -> Response:
        return topic_page(request, name)

    @router.post("/topics/{name}/configs")
    async def alter_configs(request: Request, name: str) -> Response:
        values = await form(request)
        meta = core.topics().get(name)
        if meta is None:
            return topic_page(request, name)
        if not Access(core.security, request).topic(AclOperation.ALTER_CONFIGS, name):
            return topic_page(request, name, "Not authorized to alter this topic's configs.", 403)
        current = {k: TOPIC_CONFIGS[k].render(v) for k, v in meta.configs.items()}
        key = values.get("config", "").strip()
        if values.get("action") == "reset":
            current.pop(key, None)
        else:
            current[key] = values.get("value", "").strip()
        try:
            await core.engine.alter_topic_configs(name, current)
        except KafkaError as exc:
            return topic_page(request, name, exc.message, 422)
        return RedirectResponse(topic_url(name), status_code=303)

    @router.post("/topics/{name}/partitions")
    async def add_partitions(request: Request, name: str) -> Response:
        values = await form(request)
        if not Access(core.security, request).topic(AclOperation.ALTER, name):
            return topic_page(request, name, "Not authorized to add partitions.", 403)
        try:
            total = int(values.get("total", ""))
            await core.engine.create_partitions(name, total)
        except ValueError:
            return topic_page(request, name, "The new partition count must be a number.", 422)
        except KafkaError as exc:
            return topic_page(request, name, exc.message, 422)
        return RedirectResponse(topic_url(name), status_code=303)

    @router.post("/topics/{name}/delete-records")
    async def delete_records(request: Request, name: str) -> Response:
        values = await form(request)
        if not Access(core.security, request).topic(AclOperation.DELETE, name):
            return topic_page(request, name, "Not authorized to delete records.", 403)
        try:
            partition, offset = int(values.get("partition", "")), int(values.get("offset", ""))
            if offset < 0:
                raise ValueError
            p = core.partition(name, partition)
        except ValueError:
            return topic_page(request, name, "Pick a partition and an offset.", 422)
        except KafkaError as exc:
            return topic_page(request, name, exc.message, 422)
        if offset > p.log_end_offset:
            return topic_page(
                request, name, f"Offset {offset} is past the log end ({p.log_end_offset}).", 422
            )
        await p.delete_records(offset)
        return RedirectResponse(topic_url(name), status_code=303)

    @router.post("/topics/{name}/delete")
    async def delete(request: Request, name: str) -> Response:
        values = await form(request)
        if values.get("confirm") != name:
            return topic_page(request, name, "Type the topic's name to delete it.", 422)
        if not Access(core.security, request).topic(AclOperation.DELETE, name):
            return topic_page(request, name, "Not authorized to delete this topic.", 403)
        try:
            await core.delete_topic(name)
        except KafkaError as exc:
            return topic_page(request, name, exc.message, 422)
        return RedirectResponse("/console/topics", status_code=303)
