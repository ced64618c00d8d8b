"""A small paho MQTT 5 client for the shop's services."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def connect(
    url: str,
    name: str,
    on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    subscribe: str | None = None,
) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(100)
    ready = threading.Event()  # connected, and subscribed if asked to (SUBACK received)

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if subscribe:
            c.subscribe(subscribe, qos=1)
        else:
            ready.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: ready.set()
    if on_message is not None:
        client.on_message = lambda c, u, m: on_message(m)
    client.connect(host, int(port))
    client.loop_start()
    ready.wait(10)
    return client


def properties(content_type: str, user: list[tuple[str, str]] | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    if user:
        props.UserProperty = user
    return props


def user_properties(msg: mqtt.MQTTMessage) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", None) or [])
