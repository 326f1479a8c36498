"""DeleteGroups (key 42), v0-v2: delete empty groups and their committed offsets.

Per group: GROUP_ID_NOT_FOUND when unknown, NON_EMPTY_GROUP while it has members, else the
group and every offset it committed are deleted (tombstones in the internal log, fsynced
before the answer).
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(42, 0, 2)
async def handle_delete_groups(
    ctx: RequestContext, request: m.DeleteGroupsRequest
) -> m.DeleteGroupsResponse:
    names = list(request.groups_names)
    try:
        groups = driver(ctx)
        codes: list[ErrorCode] = await groups.run(
            lambda now, _token: groups.coordinator.delete_groups(now, names)
        )
    except GroupCoordinatorError as exc:
        codes = [exc.code] * len(names)
    return m.DeleteGroupsResponse(
        results=[
            m.DeleteGroupsResponseDeletableGroupResult(group_id=g, error_code=c)
            for g, c in zip(names, codes, strict=True)
        ]
    )
