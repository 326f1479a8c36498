"""A small paho-mqtt wrapper for tests: connect, subscribe, publish, wait for messages."""

from __future__ import annotations

import collections
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bayou.protocol.mqtt import decode
from bayou.protocol.mqtt.codec import FrameReader
from bayou.protocol.mqtt.packets import MQTT_5, Packet

WAIT_S = 15.0


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    subscription_ids: list[int] = field(default_factory=list)
    topic_alias: int | None = None  # paho leaves aliases to the application: topic is ""
    dup: bool = False


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class PacketReader:
    """Reads whole packets the server sends on a raw socket."""

    def __init__(self, sock: socket.socket, version: int = MQTT_5) -> None:
        self.sock = sock
        self.version = version
        self._frames = FrameReader()

    def next(self) -> Packet | None:
        """The next packet, or None at the server's EOF (a reset raises
        ConnectionResetError).  Each read waits at most the socket's timeout."""
        while True:
            frame = self._frames.next_frame()
            if frame is not None:
                return decode(frame[0], frame[1], self.version)
            data = self.sock.recv(65536)
            if not data:
                return None
            self._frames.feed(data)


def _probe(port: int) -> str:
    """Whether ``port`` accepts a connection now (told when a client's wait fails)."""
    try:
        with socket.create_connection(("127.0.0.1", port), 2):
            return "accepted"
    except OSError as exc:
        return repr(exc)


class MqttTestClient:
    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        version: int = 4,
        clean: bool = True,
        session_expiry: int | None = None,
        transport: str = "tcp",
        will: tuple[str, bytes, int, bool] | None = None,
        keepalive: int = 30,
        receive_maximum: int | None = None,
        topic_alias_maximum: int | None = None,
        manual_ack: bool = False,
    ) -> None:
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,
            manual_ack=manual_ack,
            **kwargs,
        )
        self.version = version
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: Any = None
        self.session_present = False
        self.disconnect_reason: Any = None
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        # paho's own account of the connection (attempts, failures): told when a wait fails
        self.client_log: collections.deque[str] = collections.deque(maxlen=20)
        self.client.on_log = lambda _c, _u, _level, line: self.client_log.append(
            f"{time.strftime('%H:%M:%S')} {line}"
        )
        if will is not None:
            self.client.will_set(will[0], will[1], will[2], will[3])
        connect_props = None
        if version == 5:
            connect_props = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                connect_props.SessionExpiryInterval = session_expiry
            if receive_maximum is not None:
                connect_props.ReceiveMaximum = receive_maximum
            if topic_alias_maximum is not None:
                connect_props.TopicAliasMaximum = topic_alias_maximum
        self.client.connect_async(
            "127.0.0.1",
            port,
            keepalive,
            clean_start=clean if version == 5 else 3,
            properties=connect_props,
        )
        self.client.loop_start()
        if not self.connected.wait(WAIT_S):
            self.close()
            raise TimeoutError(
                f"no CONNACK from port {port} in {WAIT_S}s (a new connection: {_probe(port)}); "
                f"paho: {list(self.client_log)}"
            )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        user: list[tuple[str, str]] = []
        content_type = None
        sub_ids: list[int] = []
        alias = None
        if msg.properties is not None:
            user = list(getattr(msg.properties, "UserProperty", []) or [])
            content_type = getattr(msg.properties, "ContentType", None)
            sub_ids = list(getattr(msg.properties, "SubscriptionIdentifier", []) or [])
            alias = getattr(msg.properties, "TopicAlias", None)
        self.messages.put(
            Received(
                msg.topic,
                msg.payload,
                msg.qos,
                bool(msg.retain),
                user,
                content_type,
                sub_ids,
                alias,
                bool(msg.dup),
            )
        )

    def subscribe(
        self,
        topic_filter: str,
        qos: int = 0,
        *,
        sub_id: int | None = None,
        options: SubscribeOptions | None = None,
    ) -> None:
        """Subscribe and wait for the SUBACK; 5.0 ``options`` replace ``qos``."""
        self.subscribed.clear()
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        if options is not None:
            result, _mid = self.client.subscribe(topic_filter, options=options, properties=props)
        else:
            result, _mid = self.client.subscribe(topic_filter, qos, properties=props)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.subscribed.wait(WAIT_S), "no SUBACK"

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        info = self.client.publish(topic, payload, qos, retain, properties)
        if qos:
            info.wait_for_publish(WAIT_S)
            assert info.is_published()

    def receive(self, n: int, timeout: float = WAIT_S) -> list[Received]:
        out: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self, session_expiry: int | None = None) -> None:
        """DISCONNECT (5.0: with a new Session Expiry Interval if given) and stop."""
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = session_expiry
        self.client.disconnect(properties=props)
        self.client.loop_stop()
