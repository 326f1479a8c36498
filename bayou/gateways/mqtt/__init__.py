"""The MQTT door: MQTT 3.1.1/5.0 (TCP and WebSocket on one port) onto Bayou topics.

See docs/design/mqtt.md for the mapping of MQTT topics, sessions and QoS onto the log."""

from bayou.gateways.mqtt.server import MqttGateway

__all__ = ["MqttGateway"]
