"""Every Kafka API the broker serves is authorized, or is one that needs no authorization.

An API added without an entry in ``acl_checks.CHECKS`` would be served to any logged-in
principal whatever its ACLs say; this test fails the day that happens.
"""

from __future__ import annotations

from bayou.gateways.kafka.acl_checks import CHECKS
from bayou.gateways.kafka.handlers import HANDLERS

# Answered before a login (ApiVersions and the SASL exchange) or refused to every client
# whatever its ACLs (WriteTxnMarkers: markers are the coordinator's).
NEEDS_NO_CHECK = frozenset({17, 18, 27, 36})


def test_every_served_api_has_an_acl_check() -> None:
    unchecked = sorted(set(HANDLERS) - set(CHECKS) - NEEDS_NO_CHECK)
    assert unchecked == [], f"served without an ACL check: API keys {unchecked}"
