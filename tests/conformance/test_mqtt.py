"""The conformance suite against a real Mosquitto, over MQTT 5 and MQTT 3.1.1.

Independent clients are plain paho clients (tests.helpers.MqttClient) of the
same protocol version; the publisher's link can be cut with a TcpProxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pytest

from bridges.mqtt import SPEC
from mesh.plugins import Subscribe
from mesh.testing import Mosquitto, TcpProxy
from tests.conformance.base import BridgeConformance
from tests.conformance.wire import Collected, Sending, Wire
from tests.helpers import MqttClient


class MqttWire(Wire):
    unacked_by_reconnect = True  # Mosquitto tells no one what a session holds

    def __init__(self, broker: Mosquitto, protocol: str, proxy: TcpProxy) -> None:
        self.broker = broker
        self.protocol = protocol
        self.label = f"MQTT {protocol}"
        self.proxy = proxy
        self._clients: list[MqttClient] = []
        self._publisher: MqttClient | None = None

    def config(self, identity: str, *, proxied: bool = False) -> dict[str, Any]:
        port = self.proxy.port if proxied else self.broker.port
        return {
            "kind": "mqtt",
            "url": f"mqtt://127.0.0.1:{port}",
            "protocol": 5 if self.protocol == "5" else "3.1.1",
            "client_id": f"conf-{identity}",
            "keepalive": 5,
            "max_inflight": 100,
        }

    def topic(self, tag: str, leaf: str) -> str:
        return f"{tag}/{leaf}"

    def subscription(self, tag: str) -> Subscribe:
        return Subscribe(f"{tag}/#", qos=1)

    def bad_topics(self, tag: str) -> list[str]:
        return [f"{tag}/+/x", f"{tag}/#", f"{tag}/nul\x00", ""]

    async def _client(self) -> MqttClient:
        c = await asyncio.to_thread(MqttClient, self.broker.url, protocol=self.protocol)
        self._clients.append(c)
        return c

    async def inject(self, tag: str, payloads: Sequence[bytes], *, ordered: bool = True) -> Sending:
        if self._publisher is None:
            self._publisher = await self._client()
        items = [(self.topic(tag, "in"), p) for p in payloads]
        await asyncio.to_thread(self._publisher.publish_many, items)  # waits for PUBACKs
        return Sending()

    async def observe(self, tag: str) -> Collected:
        seen = Collected()
        c = await self._client()
        loop = asyncio.get_running_loop()

        def on_message(_client: Any, _userdata: Any, msg: Any) -> None:  # paho's thread
            loop.call_soon_threadsafe(seen.add, msg.topic, bytes(msg.payload))

        c.client.on_message = on_message
        await asyncio.to_thread(c.subscribe, f"{tag}/#", 1)
        return seen

    async def cut(self) -> None:
        self.proxy.reset()

    async def stop(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def kill(self) -> None:
        await asyncio.to_thread(self.broker.kill)

    async def aclose(self) -> None:
        for c in self._clients:
            await asyncio.to_thread(c.close)
        self._clients.clear()
        await self.proxy.close()


class _Mqtt(BridgeConformance):
    spec = SPEC
    protocol: ClassVar[str]
    timeouts = {"bridges.mqtt": {"PUBLISH_TIMEOUT": 3.0, "CONNECT_TIMEOUT": 3.0}}

    @pytest.fixture
    async def wire(self, mosquitto: Mosquitto) -> AsyncIterator[Wire]:
        proxy = await TcpProxy(mosquitto.port).start()
        yield MqttWire(mosquitto, self.protocol, proxy)


class TestMqtt5(_Mqtt):
    label = "MQTT 5"
    protocol = "5"
    config = {"kind": "mqtt", "protocol": 5}


class TestMqtt311(_Mqtt):
    label = "MQTT 3.1.1"
    protocol = "3.1.1"
    config = {"kind": "mqtt", "protocol": "3.1.1"}
