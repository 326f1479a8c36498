"""AMQP 0-9-1, sans-I/O: the codec (frames, methods, field tables, content properties) and
the server-side connection state machine.  See ``docs/design/amqp.md``."""

from bayou.protocol.amqp.codec import (
    AmqpError,
    Method,
    Timestamp,
    decode_content_header,
    decode_method,
    encode_content_header,
    encode_method,
    method,
)
from bayou.protocol.amqp.connection import (
    ChannelCloseRequested,
    ChannelFailed,
    ChannelFlow,
    ChannelOpened,
    ConnectionClosed,
    ConnectionCloseRequested,
    ConnectionFailed,
    Event,
    MessageReceived,
    MethodReceived,
    Opened,
    ServerConnection,
    State,
)

__all__ = [
    "AmqpError",
    "ChannelCloseRequested",
    "ChannelFailed",
    "ChannelFlow",
    "ChannelOpened",
    "ConnectionCloseRequested",
    "ConnectionClosed",
    "ConnectionFailed",
    "Event",
    "MessageReceived",
    "Method",
    "MethodReceived",
    "Opened",
    "ServerConnection",
    "State",
    "Timestamp",
    "decode_content_header",
    "decode_method",
    "encode_content_header",
    "encode_method",
    "method",
]
