"""MQTT and AMQP properties named from the headers their doors write
(``bayou/console/properties.py``), over the doors' own header writers."""

from __future__ import annotations

from bayou.console.properties import protocol_properties
from bayou.gateways.amqp.mapping import to_record
from bayou.gateways.mqtt.mapping import headers_for
from bayou.protocol.mqtt.packets import empty_properties


def test_an_mqtt_3_publish_names_qos_and_client_only() -> None:
    headers = headers_for(empty_properties(), 0, False, "plain-client")
    [mqtt] = protocol_properties(headers)
    assert (mqtt.protocol, mqtt.items) == ("MQTT", ("QoS 0", "client id plain-client"))


def test_binary_correlation_data_shows_as_hex() -> None:
    props = empty_properties()
    props.correlation_data = b"\x00\xff"
    [mqtt] = protocol_properties(headers_for(props, 2, False, "c"))
    assert "correlation data 00 ff" in mqtt.items


def test_amqp_types_header_is_not_shown_and_bytes_values_are_hex() -> None:
    record = to_record({"headers": {"raw": b"\x00\xff", "n": 7}}, b"body", None, 0)
    [amqp] = protocol_properties(record.headers)  # known by its amqp-header-types header
    assert amqp.items == ("headers raw=00 ff, n=7",)


def test_a_kafka_record_has_no_protocol_properties() -> None:
    assert protocol_properties([("content-type", b"application/json"), ("trace", None)]) == []
