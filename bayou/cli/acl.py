"""``bayou acl add/list/remove``: Kafka's ACLs, for every door.

Resources are named as ``kafka-acls`` names them: ``--topic``, ``--group``,
``--transactional-id`` (each repeatable), ``--cluster``; ``--prefixed`` makes the names
prefixes.  ``--allow NAME`` / ``--deny NAME`` (repeatable; a bare name is ``User:NAME``),
``--operation`` (repeatable; Kafka's names: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALL) and ``--host``
(default ``*``).  ``list`` and ``remove`` take the same options as a filter (anything not
given matches everything).  With ``--data-dir`` the command changes a stopped broker's data
directory, with ``--storage URL`` a cluster's shared engine (``offline.py``); otherwise it
asks the broker at ``-b`` (CreateAcls / DescribeAcls / DeleteAcls).
"""

from __future__ import annotations

from typing import Any

import click
from confluent_kafka import KafkaException

from bayou.cli._common import UsageProblem, connection_options, get_connection, plural
from bayou.cli.offline import Offline, offline_options, run_offline
from bayou.core.security import Security
from bayou.core.security.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclFilter,
    AclOperation,
    PatternType,
    Permission,
    ResourceType,
)

OPERATIONS = tuple(op.name for op in AclOperation if op.value >= AclOperation.ALL)


def principal_of(name: str) -> str:
    return name if ":" in name else f"User:{name}"


def acl_options(f: Any) -> Any:
    decorators: list[Any] = [
        click.option("--allow", multiple=True, metavar="NAME", help="Principal allowed."),
        click.option("--deny", multiple=True, metavar="NAME", help="Principal denied."),
        click.option(
            "--operation",
            "operations",
            multiple=True,
            type=click.Choice(OPERATIONS, case_sensitive=False),
            help="Operation (repeatable).",
        ),
        click.option("--topic", "topics", multiple=True, metavar="NAME"),
        click.option("--group", "groups", multiple=True, metavar="NAME"),
        click.option("--transactional-id", "txn_ids", multiple=True, metavar="ID"),
        click.option("--cluster", is_flag=True, help="The cluster resource."),
        click.option("--prefixed", is_flag=True, help="Resource names are prefixes."),
        click.option("--host", default=None, metavar="HOST", help="Client host (default *)."),
        offline_options,
        connection_options(),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _resources(
    topics: tuple[str, ...], groups: tuple[str, ...], txn_ids: tuple[str, ...], cluster: bool
) -> list[tuple[ResourceType, str]]:
    out = [(ResourceType.TOPIC, t) for t in topics]
    out += [(ResourceType.GROUP, g) for g in groups]
    out += [(ResourceType.TRANSACTIONAL_ID, t) for t in txn_ids]
    if cluster:
        out.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return out


def _principals(allow: tuple[str, ...], deny: tuple[str, ...]) -> list[tuple[Permission, str]]:
    return [(Permission.ALLOW, principal_of(a)) for a in allow] + [
        (Permission.DENY, principal_of(d)) for d in deny
    ]


@click.group()
def acl() -> None:
    """ACLs: who may do what on which topic, group, transactional id or the cluster."""


@acl.command(name="add")
@acl_options
def add(**o: Any) -> None:
    """Add ACLs: every (principal, operation, resource) given."""
    resources = _resources(o["topics"], o["groups"], o["txn_ids"], o["cluster"])
    principals = _principals(o["allow"], o["deny"])
    if not resources or not principals or not o["operations"]:
        raise UsageProblem("bayou acl add needs a resource, --allow/--deny and --operation.")
    pattern = PatternType.PREFIXED if o["prefixed"] else PatternType.LITERAL
    bindings = [
        AclBinding(rt, name, pattern, principal, o["host"] or "*", AclOperation[op.upper()], perm)
        for rt, name in resources
        for perm, principal in principals
        for op in o["operations"]
    ]
    for b in bindings:
        problem = b.problem()
        if problem is not None:
            raise UsageProblem(f"Invalid ACL: {problem}")
    offline = Offline.of(o["data_dir"], o["storage"])
    if offline is not None:

        async def job(security: Security) -> None:
            await security.acls.add(bindings)

        run_offline(offline, job)
    else:
        conn = get_connection()
        admin = conn.admin()
        futures = admin.create_acls([_to_client(b) for b in bindings])
        for future in futures.values():
            _wait(conn, future, "add ACLs")
    click.echo(f"Added {plural(len(bindings), 'ACL')}.")


def _filters(o: dict[str, Any]) -> list[AclFilter]:
    resources: list[tuple[ResourceType, str | None]] = list(
        _resources(o["topics"], o["groups"], o["txn_ids"], o["cluster"])
    ) or [(ResourceType.ANY, None)]
    principals: list[tuple[Permission, str | None]] = list(_principals(o["allow"], o["deny"])) or [
        (Permission.ANY, None)
    ]
    ops = [AclOperation[op.upper()] for op in o["operations"]] or [AclOperation.ANY]
    pattern = PatternType.PREFIXED if o["prefixed"] else PatternType.ANY
    return [
        AclFilter(rt, name, pattern if name else PatternType.ANY, principal, o["host"], op, perm)
        for rt, name in resources
        for perm, principal in principals
        for op in ops
    ]


@acl.command(name="list")
@acl_options
def list_acls(**o: Any) -> None:
    """List the ACLs matching the options (all of them without any)."""
    filters = _filters(o)
    found: list[AclBinding] = []
    offline = Offline.of(o["data_dir"], o["storage"])
    if offline is not None:

        async def job(security: Security) -> list[AclBinding]:
            return [b for f in filters for b in security.acls.find(f)]

        found = run_offline(offline, job)
    else:
        conn = get_connection()
        admin = conn.admin()
        for f in filters:
            found += [
                _from_client(b)
                for b in _wait(conn, admin.describe_acls(_to_client(f)), "list ACLs")
            ]
    for b in dict.fromkeys(found):
        click.echo(_line(b))
    click.echo(plural(len(dict.fromkeys(found)), "ACL"), err=True)


@acl.command(name="remove")
@acl_options
def remove(**o: Any) -> None:
    """Remove the ACLs matching the options (at least a resource or a principal)."""
    if not (o["topics"] or o["groups"] or o["txn_ids"] or o["cluster"] or o["allow"] or o["deny"]):
        raise UsageProblem("bayou acl remove needs a resource or a principal to match.")
    filters = _filters(o)
    gone: list[AclBinding] = []
    offline = Offline.of(o["data_dir"], o["storage"])
    if offline is not None:

        async def job(security: Security) -> list[AclBinding]:
            out: list[AclBinding] = []
            for f in filters:
                out += await security.acls.remove(f)
            return out

        gone = run_offline(offline, job)
    else:
        conn = get_connection()
        admin = conn.admin()
        for future in admin.delete_acls([_to_client(f) for f in filters]).values():
            gone += [_from_client(b) for b in _wait(conn, future, "remove ACLs")]
    for b in gone:
        click.echo(_line(b))
    click.echo(f"Removed {plural(len(gone), 'ACL')}.", err=True)


def _line(b: AclBinding) -> str:
    return (
        f"{b.permission.name}\t{b.principal}\t{b.operation.name}\t{b.resource_type.name}:"
        f"{b.resource_name}\t{b.pattern_type.name}\thost={b.host}"
    )


def _wait(conn: Any, future: Any, action: str) -> Any:
    try:
        return future.result(timeout=conn.timeout + 5)
    except KafkaException as exc:
        raise conn.failure(exc, action) from None


_CLIENT_TYPE = {"CLUSTER": "BROKER"}  # confluent-kafka's name for the cluster resource
_OUR_TYPE = {"BROKER": "CLUSTER"}


def _to_client(b: AclBinding | AclFilter) -> Any:
    import confluent_kafka.admin as admin

    client: Any = admin
    cls = client.AclBinding if isinstance(b, AclBinding) else client.AclBindingFilter
    return cls(
        client.ResourceType[_CLIENT_TYPE.get(b.resource_type.name, b.resource_type.name)],
        b.resource_name,
        client.ResourcePatternType[b.pattern_type.name],
        b.principal,
        b.host,
        client.AclOperation[b.operation.name],
        client.AclPermissionType[b.permission.name],
    )


def _from_client(b: Any) -> AclBinding:
    return AclBinding(
        ResourceType[_OUR_TYPE.get(b.restype.name, b.restype.name)],
        b.name,
        PatternType[b.resource_pattern_type.name],
        b.principal,
        b.host,
        AclOperation[b.operation.name],
        Permission[b.permission_type.name],
    )
