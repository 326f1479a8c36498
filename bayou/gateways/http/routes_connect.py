"""``/connectors`` and ``/connector-plugins``: Kafka Connect's REST API, served by the broker
(``docs/design/connect.md``).

Requests and answers have Kafka Connect's shapes, so its tooling and habits carry over:
``POST /connectors`` ``{"name", "config"}`` → 201 ``{"name", "config", "tasks", "type"}``;
``GET /connectors`` (``?expand=status`` / ``?expand=info``); per connector ``GET`` (info),
``GET``/``PUT`` ``/config``, ``GET /status``, ``GET /tasks``, ``GET /tasks/{id}/status``,
``PUT /pause`` and ``/resume`` (202), ``POST /restart`` (204, or 202 with the status when
``includeTasks``/``onlyFailed`` are given), ``POST /tasks/{id}/restart`` (204), ``DELETE``
(204).  Errors are ``{"error_code", "message"}`` with the HTTP status as the code: 404 an
unknown connector or task, 409 a connector that exists already, 400 a configuration the
runtime refuses (the message names the key); answers and errors are ``application/json``, as
Kafka Connect's.  Writes go through the connector catalog and
return once this broker's supervisor applied them; 503 when the broker runs no connectors
(``--connect off``) or is starting.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from bayou.gateways.http import errors
from bayou.gateways.http.context import gateway
from bayou.gateways.http.payloads import read_body

router = APIRouter(tags=["connect"], default_response_class=JSONResponse)


class ConnectApiError(errors.RestError):
    """An error answer of this API: Kafka Connect's body, as ``application/json``."""


async def render_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RestError)
    return JSONResponse(exc.body(), status_code=exc.status)


MAX_CONFIG_BYTES = 1 << 20


def _supervisor(request: Request) -> Any:
    supervisor = gateway(request).connect
    if supervisor is None:
        raise ConnectApiError(
            503, 503, "This broker runs no connectors (it was started with --connect off)"
        )
    return supervisor


async def _call(call: Any, *args: Any) -> Any:
    from bayou.connect.api import ConfigError, ConnectError
    from bayou.connect.supervisor import ConnectorExists, UnknownConnector

    try:
        return await asyncio.to_thread(call, *args)
    except UnknownConnector as exc:
        raise ConnectApiError(404, 404, str(exc)) from None
    except ConnectorExists as exc:
        raise ConnectApiError(409, 409, str(exc)) from None
    except ConfigError as exc:
        raise ConnectApiError(400, 400, str(exc)) from None
    except ConnectError as exc:
        raise ConnectApiError(500, 500, str(exc)) from None


async def _json(request: Request) -> Any:
    gw = gateway(request)
    body = await read_body(
        request, min(MAX_CONFIG_BYTES, gw.max_body_bytes), gw.core.request_budget
    )
    try:
        return json.loads(body)
    except ValueError:
        raise ConnectApiError(400, 400, "The body is not JSON") from None


def _config_map(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict) or not all(
        isinstance(v, str | int | float | bool) for v in doc.values()
    ):
        raise ConnectApiError(400, 400, "The configuration must be a JSON object of strings")
    return doc


def _info(supervisor: Any, name: str) -> dict[str, Any]:
    stored = supervisor.get(name)
    runner = supervisor.runner(name)
    tasks_max = max(1, _int(stored.config.get("tasks.max"), 1))
    count = len(runner.tasks) if runner is not None and runner.tasks else tasks_max
    return {
        "name": name,
        "config": stored.config,
        "tasks": [{"connector": name, "task": i} for i in range(count)],
        "type": _type(supervisor, name),
    }


def _type(supervisor: Any, name: str) -> str:
    runner = supervisor.runner(name)
    if runner is not None:
        return str(runner.type)
    from bayou.connect.registry import CONNECTOR_CLASSES, is_sink

    cls = supervisor.get(name).config.get("connector.class", "")
    if cls in CONNECTOR_CLASSES:
        return "sink" if is_sink(cls) else "source"
    return "unknown"


def _status(supervisor: Any, name: str) -> dict[str, Any]:
    stored = supervisor.get(name)
    runner = supervisor.runner(name)
    if runner is None:
        return {
            "name": name,
            "connector": {"state": "UNASSIGNED", "worker_id": supervisor.worker_id},
            "tasks": [],
            "type": _type(supervisor, name),
        }
    status: dict[str, Any] = runner.status()
    del stored
    return status


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def _bool_param(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ConnectApiError(400, 400, f"{name} must be true or false")


@router.get("/connectors", summary="List the connectors (expand=status|info for more)")
async def list_connectors(request: Request) -> Response:
    supervisor = _supervisor(request)
    expand = request.query_params.getlist("expand")
    names = sorted(supervisor.connectors())
    if not expand:
        return JSONResponse(names)
    for kind in expand:
        if kind not in ("status", "info"):
            raise ConnectApiError(400, 400, f"expand={kind}: status or info")
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            entry: dict[str, Any] = {}
            if "status" in expand:
                entry["status"] = _status(supervisor, name)
            if "info" in expand:
                entry["info"] = _info(supervisor, name)
        except Exception:  # deleted meanwhile
            continue
        out[name] = entry
    return JSONResponse(out)


@router.post("/connectors", summary="Create a connector", status_code=201)
async def create_connector(request: Request) -> Response:
    supervisor = _supervisor(request)
    doc = await _json(request)
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
        raise ConnectApiError(400, 400, 'Expected {"name": "…", "config": {…}}')
    name: str = doc["name"]
    if "/" in name or name != name.strip():
        raise ConnectApiError(400, 400, f"Connector name {name!r} is not allowed")
    config = _config_map(doc.get("config"))
    if "name" in config and config["name"] != name:
        raise ConnectApiError(400, 400, "Connector name configuration does not match the name")
    await _call(supervisor.create, name, config)
    return JSONResponse(_info(supervisor, name), status_code=201)


@router.get("/connectors/{name}", summary="A connector: its configuration and tasks")
async def get_connector(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    return JSONResponse(await _call(_info, supervisor, name))


@router.get("/connectors/{name}/config", summary="A connector's configuration")
async def get_config(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    stored = await _call(supervisor.get, name)
    return JSONResponse(stored.config)


@router.put("/connectors/{name}/config", summary="Create or reconfigure a connector")
async def put_config(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    config = _config_map(await _json(request))
    if "name" in config and config["name"] != name:
        raise ConnectApiError(400, 400, "Connector name configuration does not match the path")
    _stored, created = await _call(supervisor.put_config, name, config)
    return JSONResponse(_info(supervisor, name), status_code=201 if created else 200)


@router.get("/connectors/{name}/status", summary="A connector's state and its tasks'")
async def get_status(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    return JSONResponse(await _call(_status, supervisor, name))


@router.get("/connectors/{name}/tasks", summary="A connector's tasks and their configuration")
async def get_tasks(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    info = await _call(_info, supervisor, name)
    return JSONResponse(
        [
            {"id": task, "config": {**info["config"], "task.id": str(task["task"])}}
            for task in info["tasks"]
        ]
    )


@router.get("/connectors/{name}/tasks/{task_id}/status", summary="One task's state")
async def get_task_status(request: Request, name: str, task_id: int) -> Response:
    supervisor = _supervisor(request)
    status = await _call(_status, supervisor, name)
    for task in status["tasks"]:
        if task["id"] == task_id:
            return JSONResponse(task)
    raise ConnectApiError(404, 404, f"Task {name}-{task_id} not found")


@router.put("/connectors/{name}/pause", summary="Pause a connector and its tasks", status_code=202)
async def pause(request: Request, name: str) -> Response:
    from bayou.connect.runtime.task import PAUSED

    supervisor = _supervisor(request)
    await _call(supervisor.set_state, name, PAUSED)
    return Response(status_code=202)


@router.put("/connectors/{name}/resume", summary="Resume a paused connector", status_code=202)
async def resume(request: Request, name: str) -> Response:
    from bayou.connect.runtime.task import RUNNING

    supervisor = _supervisor(request)
    await _call(supervisor.set_state, name, RUNNING)
    return Response(status_code=202)


@router.post("/connectors/{name}/restart", summary="Restart a connector (and tasks)")
async def restart(
    request: Request,
    name: str,
    includeTasks: str | None = None,
    onlyFailed: str | None = None,
) -> Response:
    supervisor = _supervisor(request)
    include = _bool_param(includeTasks, "includeTasks")
    only = _bool_param(onlyFailed, "onlyFailed")
    await _call(supervisor.get, name)
    runner = supervisor.runner(name)
    if runner is None:
        raise ConnectApiError(409, 409, f"Connector {name} is not running yet")
    status = await _call(runner.restart, include, only)
    if includeTasks is None and onlyFailed is None:
        return Response(status_code=204)
    return JSONResponse(status, status_code=202)


@router.post("/connectors/{name}/tasks/{task_id}/restart", summary="Restart one task")
async def restart_task(request: Request, name: str, task_id: int) -> Response:
    supervisor = _supervisor(request)
    await _call(supervisor.get, name)
    runner = supervisor.runner(name)
    if runner is None or not runner.has_task(task_id):
        raise ConnectApiError(404, 404, f"Task {name}-{task_id} not found")
    await _call(runner.restart_task, task_id)
    return Response(status_code=204)


@router.delete("/connectors/{name}", summary="Delete a connector", status_code=204)
async def delete_connector(request: Request, name: str) -> Response:
    supervisor = _supervisor(request)
    await _call(supervisor.delete, name)
    return Response(status_code=204)


@router.get("/connector-plugins", summary="The connector classes")
async def plugins(request: Request) -> Response:
    from bayou.connect.registry import CONNECTOR_CLASSES, is_sink

    try:
        version = importlib.metadata.version("bayou")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return JSONResponse(
        [
            {"class": name, "type": "sink" if is_sink(name) else "source", "version": version}
            for name in sorted(CONNECTOR_CLASSES)
        ]
    )
