"""The one small interface every door implements, so ``bayou.app`` can run any of them.

A door is a listener (Kafka, HTTP, MQTT, AMQP) over the core: ``start`` binds and serves,
``stop`` stops accepting, finishes or ends what is in flight (bounded) and releases its
resources — before the core's coordinators and the engine close, so what a door commits on
its way out (MQTT sessions, AMQP acks) still lands.  ``address`` is what the start-up line
and the health check report.
"""

from __future__ import annotations

from typing import Protocol


class Door(Protocol):
    #: "kafka", "http", "mqtt", "amqp"
    name: str

    @property
    def address(self) -> str:
        """``host:port`` it listens on (the bound port when 0 was asked for)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, object]:
        """A small JSON-able status: listening, connections, …"""
        ...
