"""IncrementalAlterConfigs (key 44), v0-v1: edit topic configs or broker defaults.

Each config names an operation: SET (0) a value, DELETE (1) the override (back to the
default), APPEND (2) or SUBTRACT (3) items of a list config (``cleanup.policy``).  Topic
resources (type 2) edit the topic's overrides; broker resources (type 4) the dynamic
topic-config defaults by broker name (``log.retention.ms``), for the cluster (resource name
``""``) or this node (its id).  Group resources (type 32) set a share group's ``share.*``
configs (``share.record.lock.duration.ms``, ``share.delivery.count.limit``,
``share.auto.offset.reset``, ``share.isolation.level`` …; SET and DELETE), as Kafka keeps
group configs — whether or not the group exists yet.  A resource's changes are validated
together (INVALID_CONFIG naming the config) and applied all or nothing; ``validate_only``
checks only.  Changes apply live.  v1 is flexible.  See ``bayou/gateways/kafka/config_changes.py``.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.config_changes import alter_resource
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import alter_group_configs
from bayou.protocol.kafka import messages as m

GROUP = 32


@handles(44, 0, 1)
async def handle_incremental_alter_configs(
    ctx: RequestContext, request: m.IncrementalAlterConfigsRequest
) -> m.IncrementalAlterConfigsResponse:
    core = ctx.core
    responses: list[m.IncrementalAlterConfigsResponseAlterConfigsResourceResponse] = []
    for resource in request.resources:
        code, message = ErrorCode.NONE, None
        changes = [(c.name, c.config_operation, c.value) for c in resource.configs]
        try:
            if resource.resource_type == GROUP:
                await alter_group_configs(
                    ctx,
                    resource.resource_name,
                    changes,
                    incremental=True,
                    validate_only=request.validate_only,
                )
            else:
                await alter_resource(
                    core,
                    core.node_id,
                    resource.resource_type,
                    resource.resource_name,
                    changes,
                    incremental=True,
                    validate_only=request.validate_only,
                )
        except KafkaError as exc:
            code, message = exc.code, exc.message
        responses.append(
            m.IncrementalAlterConfigsResponseAlterConfigsResourceResponse(
                error_code=code,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
        )
    return m.IncrementalAlterConfigsResponse(responses=responses)
