"""REST Proxy errors: an HTTP status plus a JSON body ``{"error_code": int, "message": str}``.

Confluent REST Proxy's ``error_code`` is the HTTP status followed by two digits naming the
case (40401 topic not found, 40403 consumer instance not found …), or the bare status for
generic cases (400 bad JSON, 415 wrong content type, 422 invalid body).  Every error the
gateway answers is a ``RestError``; Kafka errors from the broker core are mapped by
``from_kafka``, group-coordinator errors by ``from_coordinator``.  Nothing else reaches a
client (unexpected exceptions become 500/50001).
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode, KafkaError

TOPIC_NOT_FOUND = 40401
PARTITION_NOT_FOUND = 40402
CONSUMER_INSTANCE_NOT_FOUND = 40403
UNACCEPTABLE_EMBEDDED_FORMAT = 40601
CONSUMER_ALREADY_EXISTS = 40902
ILLEGAL_STATE = 40903
JSON_CONVERSION = 42203
INVALID_CONSUMER_CONFIG = 42204
OFFSET_OUT_OF_RANGE = 42206
INTERNAL = 50001
KAFKA = 50002
KAFKA_RETRIABLE = 50003

# Per-record produce errors, as REST Proxy puts them in ``offsets[].error_code``.
RECORD_NON_RETRIABLE = 1
RECORD_RETRIABLE = 2


class RestError(Exception):
    """An error answer: HTTP ``status``, REST Proxy ``error_code`` and a readable message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, object]:
        return {"error_code": self.error_code, "message": self.message}


def bad_request(message: str) -> RestError:
    return RestError(400, 400, message)


def unprocessable(message: str, code: int = 422) -> RestError:
    return RestError(422, code, message)


def topic_not_found(topic: str) -> RestError:
    return RestError(404, TOPIC_NOT_FOUND, f"Topic {topic} not found.")


def partition_not_found(topic: str, partition: int) -> RestError:
    return RestError(404, PARTITION_NOT_FOUND, f"Partition {partition} of topic {topic} not found.")


def from_kafka(exc: KafkaError, *, topic: str | None = None) -> RestError:
    """The REST answer for a Kafka error raised by the broker core."""
    code = exc.code
    if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
        return RestError(
            404, TOPIC_NOT_FOUND, exc.message if topic is None else f"Topic {topic} not found."
        )
    if code == ErrorCode.INVALID_TOPIC_EXCEPTION:
        return unprocessable(exc.message)
    if code in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE):
        return RestError(413, 413, exc.message)
    if code == ErrorCode.OFFSET_OUT_OF_RANGE:
        return unprocessable(exc.message, OFFSET_OUT_OF_RANGE)
    if code.retriable:
        return RestError(503, KAFKA_RETRIABLE, exc.message)
    return RestError(500, KAFKA, exc.message)


def from_coordinator(exc: GroupCoordinatorError) -> RestError:
    """The REST answer for a group coordinator's refusal: 503 while it is not available
    (retriable), 422 for a malformed request or metadata too large, 404 for an unknown
    partition, else 409 (the group's state does not allow it)."""
    code, text = exc.code, str(exc)
    if code in (
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.NOT_COORDINATOR,
    ):
        return RestError(503, KAFKA_RETRIABLE, f"Group coordinator not available: {text}")
    if code == ErrorCode.INVALID_REQUEST:
        return unprocessable(text)
    if code == ErrorCode.OFFSET_METADATA_TOO_LARGE:
        return unprocessable(f"Offset metadata too large: {text}")
    if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
        return RestError(404, PARTITION_NOT_FOUND, text)
    return RestError(409, ILLEGAL_STATE, f"Illegal state: {code.name}: {text}")


def record_error_code(exc: KafkaError) -> int:
    """REST Proxy's per-record code: 2 when retrying may succeed, else 1."""
    return RECORD_RETRIABLE if exc.code.retriable else RECORD_NON_RETRIABLE
