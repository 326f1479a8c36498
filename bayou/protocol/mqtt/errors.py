"""Why an MQTT connection must end: every error carries the reason code to send (5.0)."""

from __future__ import annotations

from bayou.errors import BayouError
from bayou.protocol.mqtt.packets import Reason


class MqttError(BayouError):
    """A protocol-level failure; ``reason`` is the 5.0 reason code to report to the peer."""

    reason: int = Reason.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedPacket(MqttError):
    reason = Reason.MALFORMED_PACKET


class ProtocolError(MqttError):
    reason = Reason.PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    reason = Reason.PACKET_TOO_LARGE
