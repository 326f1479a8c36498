"""What Bayou answers about permissions while it has no authorizer.

Theory of operation
-------------------
Bayou has no ACLs yet, so — like a Kafka broker started without ``authorizer.class.name`` —
every client may do everything.  Two kinds of request ask about that:

* the ACL APIs (DescribeAcls, CreateAcls, DeleteAcls) answer SECURITY_DISABLED with Kafka's
  own messages (``NO_AUTHORIZER_*``), so admin tools report "security is disabled" and keep
  their connection;
* requests that may ask for *authorized operations* (Metadata for topics and the cluster,
  DescribeCluster, DescribeGroups, ConsumerGroupDescribe) get every operation that applies
  to the resource type — Kafka's ``AclEntry.supportedOperations`` — as the 32-bit field Kafka
  uses: bit ``1 << code`` set for each ``AclOperation`` code.  Not asked, they keep the
  schema's "not provided" sentinel (``NOT_PROVIDED``).

With an authorizer (``--authorizer acl``) the ACL APIs are served for real and the
authorized-operations fields are the principal's own sets (``acl_checks.py``); these answers
stay what a broker without one gives.
"""

from __future__ import annotations

from collections.abc import Iterable

from bayou.core.security.acl import AclOperation

NOT_PROVIDED = -(2**31)  # the schemas' default: authorized operations were not requested

NO_AUTHORIZER_DESCRIBE = "No Authorizer is configured on the broker"
NO_AUTHORIZER = "No Authorizer is configured."


def bit_field(operations: Iterable[AclOperation]) -> int:
    """Kafka's ``Utils.to32BitField``: bit ``code`` set for each operation."""
    field = 0
    for op in operations:
        field |= 1 << int(op)
    return field


_O = AclOperation
TOPIC_OPERATIONS = bit_field(
    [
        _O.READ,
        _O.WRITE,
        _O.CREATE,
        _O.DELETE,
        _O.ALTER,
        _O.DESCRIBE,
        _O.DESCRIBE_CONFIGS,
        _O.ALTER_CONFIGS,
    ]
)
CLUSTER_OPERATIONS = bit_field(
    [
        _O.CREATE,
        _O.ALTER,
        _O.DESCRIBE,
        _O.CLUSTER_ACTION,
        _O.DESCRIBE_CONFIGS,
        _O.ALTER_CONFIGS,
        _O.IDEMPOTENT_WRITE,
    ]
)
GROUP_OPERATIONS = bit_field([_O.READ, _O.DESCRIBE, _O.DELETE])


def cluster_operations(requested: bool) -> int:
    return CLUSTER_OPERATIONS if requested else NOT_PROVIDED


def group_operations(requested: bool) -> int:
    return GROUP_OPERATIONS if requested else NOT_PROVIDED
