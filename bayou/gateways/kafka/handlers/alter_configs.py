"""AlterConfigs (key 33), v0-v2: replace the config overrides of topics or broker defaults.

The legacy, non-incremental form: the configs given become the resource's whole set of
overrides (anything not named returns to its default).  Topic resources (type 2) change the
topic's overrides; broker resources (type 4) the dynamic topic-config defaults, by broker
name (``log.retention.ms``), for the cluster (resource name ``""``) or this node (its id).
Every value is validated (INVALID_CONFIG with a message naming the config) before anything
changes; ``validate_only`` checks without applying.  Changes apply live.  v1 is v0's twin;
v2 is flexible.  See ``bayou/gateways/kafka/config_changes.py``.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.config_changes import SET, alter_resource
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(33, 0, 2)
async def handle_alter_configs(
    ctx: RequestContext, request: m.AlterConfigsRequest
) -> m.AlterConfigsResponse:
    core = ctx.core
    responses: list[m.AlterConfigsResponseAlterConfigsResourceResponse] = []
    for resource in request.resources:
        code, message = ErrorCode.NONE, None
        changes = [(c.name, SET, c.value) for c in resource.configs if c.value is not None]
        try:
            await alter_resource(
                core,
                core.node_id,
                resource.resource_type,
                resource.resource_name,
                changes,
                incremental=False,
                validate_only=request.validate_only,
            )
        except KafkaError as exc:
            code, message = exc.code, exc.message
        responses.append(
            m.AlterConfigsResponseAlterConfigsResourceResponse(
                error_code=code,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
        )
    return m.AlterConfigsResponse(responses=responses)
