"""Test helpers: waiting for conditions, plain MQTT and NATS clients, node configs."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import paho.mqtt.client as mqtt
from nats.aio.msg import Msg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from mesh.config import MeshConfig, parse_config
from mesh.core import frames
from mesh.plugins import Bridge, BridgeContext, BridgeSpec, Delivery, HttpIngress
from mesh.runtime.inbox import Inbox
from mesh.runtime.lifecycle import Faults, TaskScope
from mesh.runtime.metrics import Metrics


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def open_bridge(
    spec: BridgeSpec,
    config: dict[str, Any],
    name: str = "b",
    node_id: str = "bridge-test",
    *,
    inbox: Inbox | None = None,
    http: HttpIngress | None = None,
) -> tuple[Bridge, BridgeContext]:
    """A bridge from its spec with a context of its own, as a node would build it.

    ``inbox`` replaces the node's default one (e.g. a smaller bound); ``http``
    is the node's HTTP server as a receive side, for bridges that take requests.
    """
    metrics = Metrics()
    ctx = BridgeContext(
        broker=name,
        node_id=node_id,
        inbox=inbox if inbox is not None else Inbox(name),
        tasks=TaskScope(Faults(metrics), prefix=f"bridge[{name}]."),
        metrics=metrics,
        http=http,
    )
    return spec.factory(spec.config.model_validate(config), ctx), ctx


async def receive_n(inbox: Inbox, count: int, timeout: float = 20.0) -> list[Delivery]:
    """Exactly ``count`` deliveries from ``inbox``, however its takes split them."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await inbox.take(count - len(got))
    return got


def node_config(tmp_path: Path, node_id: str, **sections: Any) -> MeshConfig:
    data: dict[str, Any] = {
        "node": {"id": node_id, "listen": "127.0.0.1:0", "data_dir": str(tmp_path / node_id)},
    }
    data.update(sections)
    return parse_config(data, f"<{node_id}>", env={}, overrides={})


def config_data(config: MeshConfig, **dump: Any) -> dict[str, Any]:
    """A configuration as plain data with its secrets in clear (to write a test's YAML).

    ``model_dump(mode="json")`` masks every ``SecretStr`` as ``**********``.
    """

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, (Path, enum.Enum)):
            return str(value.value if isinstance(value, enum.Enum) else value)
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(f"cannot write {type(value).__name__}")

    data: dict[str, Any] = orjson.loads(
        orjson.dumps(config.model_dump(mode="python", by_alias=True, **dump), default=reveal)
    )
    return data


def last_token(msg: Msg) -> str:
    """The last token of a message's subject (tests put the event id there)."""
    return msg.subject.rsplit(".", 1)[1]


@contextlib.asynccontextmanager
async def nats_collect(
    url: str, subject: str, key: Callable[[Msg], str] = last_token
) -> AsyncIterator[list[str]]:
    """Subscribe a plain nats-py client to ``subject``; yield what arrives, keyed by ``key``."""
    received: list[str] = []

    async def on_msg(msg: Msg) -> None:
        received.append(key(msg))

    nc = await nats.connect(url)
    try:
        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        yield received
    finally:
        await nc.close()


async def hello_answer(url: str, node_id: str, token: str) -> dict[str, Any]:
    """Dial the ``/mesh`` at ``url`` as ``node_id`` and return the answer to the hello."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(frames.hello(node_id, "default", token))
        msg = await ws.receive(timeout=5)
        answer: dict[str, Any] = orjson.loads(msg.data)
        return answer


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class MqttClient:
    """A plain paho client for tests: publish with PUBACK waits, collect messages."""

    def __init__(self, url: str, *, protocol: str = "5", client_id: str | None = None) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.v5 = protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("client-"),
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError(f"test client cannot connect to {url}")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        if not self._subscribed.wait(10):
            raise AssertionError(f"no SUBACK for {topic}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        content_type: str | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> mqtt.MQTTMessageInfo:
        props = None
        if self.v5 and (content_type or user_properties):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if content_type:
                props.ContentType = content_type
            if user_properties:
                props.UserProperty = user_properties
        return self.client.publish(topic, payload, qos=qos, properties=props)

    def publish_many(self, items: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = [self.client.publish(t, p, qos=qos) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)
            if not info.is_published():
                raise AssertionError("publish not acknowledged")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
