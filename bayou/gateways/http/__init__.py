"""The HTTP door: Confluent REST Proxy v2 and live topic streams (see docs/design/http.md)."""

from bayou.gateways.http.server import HttpGateway

__all__ = ["HttpGateway"]
