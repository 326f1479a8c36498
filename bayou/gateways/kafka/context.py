"""What a Kafka handler sees: the core, the listener it came through, and the request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bayou.gateways.kafka.session import ClientSession

if TYPE_CHECKING:
    from bayou.core import Core
    from bayou.core.quotas import ClientQuota
    from bayou.gateways.kafka.share_relay import ShareRelays
    from bayou.gateways.kafka.share_sessions import ShareSessions
    from bayou.protocol.kafka import RequestHeader


@dataclass(frozen=True)
class KafkaSettings:
    host: str = "127.0.0.1"
    port: int = 9092
    tls_port: int = 9093  # 0: any free port (with tls_enabled)
    tls_enabled: bool = False  # a TLS listener beside the plain one
    advertised_host: str | None = None  # None: ``host``
    socket_request_max_bytes: int = 100 * 1024 * 1024
    fetch_max_bytes: int = 16 * 1024 * 1024
    num_partitions: int = 1  # CreateTopics with -1 partitions
    # the broker's own options as DescribeConfigs shows them: (Kafka name, value, type)
    static_configs: tuple[tuple[str, str, str], ...] = ()


class Listener(Protocol):
    """The Kafka listener a request came through (``server.KafkaDoor``)."""

    @property
    def core(self) -> Core: ...

    @property
    def settings(self) -> KafkaSettings: ...

    @property
    def advertised_host(self) -> str: ...

    @property
    def advertised_port(self) -> int: ...

    @property
    def tls(self) -> bool: ...

    @property
    def share_sessions(self) -> ShareSessions: ...

    @property
    def share_relays(self) -> ShareRelays: ...


class Connection(Protocol):
    """The client connection a request came over (``connection.KafkaConnection``)."""

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the connection closes (at once if it is closed)."""


@dataclass
class RequestContext:
    """One request: the listener it came through, its header, the connection's peer, who
    it is (``session.py``) and the quotas that apply to it (``throttling.py``): a handler
    that throttles the client itself (Fetch) sets ``throttle_ms``."""

    door: Listener
    header: RequestHeader
    peer: str
    _session: ClientSession | None = None
    connection: Connection | None = None
    #: the connection's last fetch offset per partition: how far its fetches moved is the
    #: count of messages out (``/metrics``), without decoding a batch
    fetch_positions: dict[tuple[str, int], int] = field(default_factory=dict)
    quota: ClientQuota | None = None
    throttle_ms: int = 0

    @property
    def session(self) -> ClientSession:
        if self._session is None:  # a request made outside a connection (tests)
            host = self.peer.rpartition(":")[0] or self.peer
            self._session = ClientSession(self.core.security, host, tls=False, cert=None)
        return self._session

    @property
    def core(self) -> Core:
        return self.door.core

    @property
    def version(self) -> int:
        return int(self.header.api_version)
