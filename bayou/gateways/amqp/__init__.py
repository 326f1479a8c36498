"""The AMQP 0-9-1 gateway: RabbitMQ clients on Kafka topics.  See ``docs/design/amqp.md``."""

from bayou.gateways.amqp.server import AmqpGateway

__all__ = ["AmqpGateway"]
