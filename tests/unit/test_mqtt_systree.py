"""SysTree: what the $SYS tree publishes at each update (time passed in)."""

from __future__ import annotations

from bayou.gateways.mqtt.systree import SysCounters, SysTree


def test_first_update_publishes_everything_then_only_what_changed() -> None:
    tree = SysTree(start_s=100.0)
    counters = SysCounters()
    gauges = {"clients_connected": 1, "clients_total": 1}
    first = dict(tree.update(100.0, counters, gauges))
    assert first["$SYS/broker/uptime"] == b"0 seconds"
    assert first["$SYS/broker/clients/connected"] == b"1"
    assert first["$SYS/broker/clients/active"] == b"1"  # mosquitto's older alias
    assert first["$SYS/broker/messages/received"] == b"0"
    assert first["$SYS/broker/load/bytes/received/1min"] == b"0.00"

    counters.publish_received += 60
    counters.messages_received += 60
    second = dict(tree.update(110.0, counters, gauges))
    assert second["$SYS/broker/uptime"] == b"10 seconds"
    assert second["$SYS/broker/publish/messages/received"] == b"60"
    assert "$SYS/broker/clients/connected" not in second  # unchanged: not sent again
    assert "$SYS/broker/bytes/received" not in second
    # 60 in 10 s is 360/min; the 1-minute average moves 1 - e^(-1/6) of the way there
    assert second["$SYS/broker/load/publish/received/1min"] == b"55.27"
    assert "$SYS/broker/load/bytes/received/1min" not in second  # still 0.00


def test_clients_maximum_only_grows() -> None:
    tree = SysTree(start_s=0.0)
    counters = SysCounters()
    tree.update(1.0, counters, {"clients_total": 5})
    out = dict(tree.update(2.0, counters, {"clients_total": 2}))
    assert out["$SYS/broker/clients/total"] == b"2"
    assert "$SYS/broker/clients/maximum" not in out  # still 5


def test_version_is_static() -> None:
    [(topic, payload)] = SysTree(0.0).static()
    assert topic == "$SYS/broker/version" and payload.startswith(b"bayou version ")
