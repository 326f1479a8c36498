"""Gateways: the doors other than Kafka (HTTP, MQTT, AMQP), all writing through BrokerState."""
