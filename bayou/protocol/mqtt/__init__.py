"""MQTT 3.1.1 and 5.0, sans-I/O: a codec (``codec``) and a server connection state machine
(``connection``).  No sockets, no asyncio, no clock: bytes in, packets out; packets in,
bytes out.  The asyncio gateway in ``bayou.gateways.mqtt`` drives it."""

from bayou.protocol.mqtt.codec import FrameReader, decode, encode, encode_properties, encode_publish
from bayou.protocol.mqtt.connection import (
    PublishRun,
    ServerConnection,
    State,
    UnsupportedProtocolVersion,
)
from bayou.protocol.mqtt.errors import MalformedPacket, MqttError, PacketTooLarge, ProtocolError
from bayou.protocol.mqtt.packets import *  # noqa: F403

__all__ = [
    "FrameReader",
    "MalformedPacket",
    "MqttError",
    "PacketTooLarge",
    "ProtocolError",
    "PublishRun",
    "ServerConnection",
    "State",
    "UnsupportedProtocolVersion",
    "decode",
    "encode",
    "encode_properties",
    "encode_publish",
]
