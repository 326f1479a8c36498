"""ACL bindings and filters to and from the ACL APIs' wire fields (Kafka's codes)."""

from __future__ import annotations

from typing import Any

from bayou.core.security.acl import (
    AclBinding,
    AclFilter,
    AclOperation,
    PatternType,
    Permission,
    ResourceType,
)


class BadAcl(ValueError):
    """A code outside Kafka's enums."""


def _enum(kind: Any, value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise BadAcl(f"unknown {kind.__name__} {value}") from None


def acl_filter(resource_type: int, name: str | None, pattern: int, principal: str | None,
               host: str | None, operation: int, permission: int) -> AclFilter:  # fmt: skip
    f = AclFilter(
        _enum(ResourceType, resource_type),
        name,
        _enum(PatternType, pattern),
        principal,
        host,
        _enum(AclOperation, operation),
        _enum(Permission, permission),
    )
    if PatternType.UNKNOWN in (f.pattern_type,) or f.resource_type == ResourceType.UNKNOWN:
        raise BadAcl("UNKNOWN in a filter")
    if f.operation == AclOperation.UNKNOWN or f.permission == Permission.UNKNOWN:
        raise BadAcl("UNKNOWN in a filter")
    return f


def creation(c: Any, version: int) -> AclBinding:
    return AclBinding(
        _enum(ResourceType, c.resource_type),
        c.resource_name,
        _enum(PatternType, c.resource_pattern_type if version >= 1 else PatternType.LITERAL),
        c.principal,
        c.host,
        _enum(AclOperation, c.operation),
        _enum(Permission, c.permission_type),
    )
