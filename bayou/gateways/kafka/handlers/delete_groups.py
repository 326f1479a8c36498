"""DeleteGroups (key 42), v0-v2: delete empty groups and their committed offsets.

Per group: GROUP_ID_NOT_FOUND when unknown, NON_EMPTY_GROUP while it has members, else the
group and every offset it committed are deleted (tombstones in the internal log, fsynced
before the answer).  Share groups (KIP-932) are deleted by the share coordinator, with
their share partitions' state, as Kafka deletes a share group's state with the group.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.core.shares import ShareCoordinatorError
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
    shared: dict[str, ErrorCode] = {}
    shares = ctx.core.shares
    if shares is not None and any(shares.coordinator.is_share_group(g) for g in names):
        try:
            shared = await shares.run(lambda now: shares.coordinator.delete_groups(now, names))
        except ShareCoordinatorError as exc:
            shared = {g: exc.code for g in names if shares.coordinator.is_share_group(g)}
    others = [g for g in names if g not in shared]
    try:
        groups = driver(ctx)
        codes: list[ErrorCode] = await groups.run(
            lambda now, _token: groups.coordinator.delete_groups(now, others)
        )
    except GroupCoordinatorError as exc:
        codes = [exc.code] * len(others)
    answer = dict(zip(others, codes, strict=True))
    answer.update(shared)
    codes = [answer[g] for g in names]
    return m.DeleteGroupsResponse(
        results=[
            m.DeleteGroupsResponseDeletableGroupResult(group_id=g, error_code=c)
            for g, c in zip(names, codes, strict=True)
        ]
    )
