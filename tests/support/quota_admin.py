"""Client quotas through kafka-python's admin client: its own codec of AlterClientQuotas and
DescribeClientQuotas (KIP-546) sent over its connection, as Kafka's ``kafka-configs`` does —
neither librdkafka nor kafka-python offers a method for them."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient
from kafka.protocol.admin.client_quotas import (
    AlterClientQuotasRequest,
    DescribeClientQuotasRequest,
)

Entity = dict[str, str | None]  # {"user": "alice", "client-id": None (<default>)}


class QuotaAdmin:
    """``node_id``: send every request to that broker (by default the client picks one)."""

    def __init__(self, bootstrap: str, node_id: int | None = None, **config: Any) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, **config)
        self.node_id = node_id

    def close(self) -> None:
        self.admin.close()

    def _send(self, request: Any) -> Any:
        async def send() -> Any:
            return await self.admin._manager.send(request, node_id=self.node_id)

        return self.admin._manager.run(send)

    def alter(
        self, entity: Entity, values: dict[str, float | None], validate_only: bool = False
    ) -> tuple[int, str | None]:
        """Set (a number) or remove (None) quotas on one entity: (error code, message)."""
        Entry = AlterClientQuotasRequest.EntryData
        request = AlterClientQuotasRequest(
            entries=[
                Entry(
                    entity=[
                        Entry.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()
                    ],
                    ops=[
                        Entry.OpData(key=k, value=0.0 if v is None else float(v), remove=v is None)
                        for k, v in values.items()
                    ],
                )
            ],
            validate_only=validate_only,
        )
        entry = self._send(request).entries[0]
        return entry.error_code, entry.error_message

    def describe(
        self,
        components: list[tuple[str, int, str | None]] = (),
        strict: bool = False,  # type: ignore[assignment]
    ) -> dict[tuple[tuple[str, str | None], ...], dict[str, float]]:
        """(entity type, match type 0 exact / 1 default / 2 any, match) components → every
        matching entity and its quotas; raises on an error."""
        Component = DescribeClientQuotasRequest.ComponentData
        response = self._send(
            DescribeClientQuotasRequest(
                components=[
                    Component(entity_type=t, match_type=mt, match=mm) for t, mt, mm in components
                ],
                strict=strict,
            )
        )
        if response.error_code:
            raise RuntimeError(
                f"DescribeClientQuotas: {response.error_code} {response.error_message}"
            )
        return {
            tuple((e.entity_type, e.entity_name) for e in entry.entity): {
                v.key: v.value for v in entry.values
            }
            for entry in response.entries
        }
