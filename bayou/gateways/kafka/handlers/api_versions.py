"""ApiVersions (key 18), v0-v3: which APIs and versions this broker serves.

Read straight from the handler registry.  A request at a version newer than v3 is answered
with UNSUPPORTED_VERSION in a v0 body listing our range, as the protocol asks, so the client
retries at a version we speak.  v3 carries the client's software name/version (ignored) and
tagged feature fields (left empty: no finalized features).
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import HANDLERS, handles
from bayou.protocol.kafka import messages as m


def _api_keys() -> list[m.ApiVersionsResponseApiVersion]:
    return [
        m.ApiVersionsResponseApiVersion(
            api_key=r.api_key, min_version=r.advertised_min, max_version=r.max_version
        )
        for r in sorted(HANDLERS.values(), key=lambda r: r.api_key)
    ]


def unsupported_version_response() -> m.ApiVersionsResponse:
    return m.ApiVersionsResponse(error_code=ErrorCode.UNSUPPORTED_VERSION, api_keys=_api_keys())


@handles(18, 0, 3)
async def handle_api_versions(
    ctx: RequestContext, request: m.ApiVersionsRequest
) -> m.ApiVersionsResponse:
    return m.ApiVersionsResponse(error_code=ErrorCode.NONE, api_keys=_api_keys())
