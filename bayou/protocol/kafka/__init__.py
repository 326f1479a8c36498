"""Bayou's sans-I/O Kafka codec: request/response headers and every message we serve.

See ``docs/design/kafka-codec.md``. Bytes in, objects out; objects in, bytes out.
"""

from bayou.protocol.kafka import messages
from bayou.protocol.kafka.api import (
    API_KEYS,
    DATA,
    ApiInfo,
    RequestHeader,
    UnsupportedApi,
    UnsupportedVersionError,
    decode_data,
    decode_request_body,
    decode_request_header,
    decode_response,
    encode_data,
    encode_request,
    encode_response,
    encode_response_parts,
)
from bayou.protocol.kafka.primitives import ApiMessage, Message

__all__ = [
    "API_KEYS",
    "DATA",
    "ApiInfo",
    "ApiMessage",
    "Message",
    "RequestHeader",
    "UnsupportedApi",
    "UnsupportedVersionError",
    "decode_data",
    "decode_request_body",
    "decode_request_header",
    "decode_response",
    "encode_data",
    "encode_request",
    "encode_response",
    "encode_response_parts",
    "messages",
]
