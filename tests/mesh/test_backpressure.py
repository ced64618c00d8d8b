"""Backpressure: with the destination broker down and a small outbox, `block` stops
ingress acknowledging (HTTP answers 503), memory stays flat, and after recovery every
event arrives once; `drop-oldest` keeps accepting and counts what it dropped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import orjson
import psutil
import pytest
from nats.js.api import StreamConfig

from mesh.core.codec import Mode, encode_http, encode_mqtt
from mesh.core.envelope import decode_record
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.runtime.outbox import Outbox
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, node_config, unique, wait_for

LIMIT = 64 * 1024
N = 2000
# An empty outbox takes any one batch (so nothing stalls on a batch larger than the
# bound): the bound may be exceeded by one ingress batch of up to 512 events.
OVERSHOOT = 512 * 400


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(workdir=tmp_path / "nats-js", jetstream=True)
    server.start()
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(StreamConfig(name="BP", subjects=["bp.>"]))
    await nc.close()
    yield server
    server.close()


async def stream_ids(server: NatsServer) -> list[str]:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    info = await js.stream_info("BP")
    ids = []
    if info.state.messages:
        sub = await js.pull_subscribe("bp.>", durable=unique("check"))
        while len(ids) < info.state.messages:
            for m in await sub.fetch(500, timeout=5):
                ids.append((m.headers or {})["ce-id"])
                await m.ack()
    await nc.close()
    return ids


def mqtt_events(tag: str) -> list[bytes]:
    out = []
    for i in range(N):
        ev = Event(
            {"specversion": "1.0", "id": f"{tag}-{i}", "source": "/bp", "type": "t"},
            orjson.dumps({"i": i, "pad": "x" * 200}),
            json_implied=True,
        )
        out.append(encode_mqtt(ev, Mode.STRUCTURED, "5")[0])
    return out


class Publisher:
    """Publishes QoS 1 without waiting, counting the broker's PUBACKs to the publisher."""

    def __init__(self, url: str) -> None:
        self.client = MqttClient(url)
        self.acked = 0
        self._lock = threading.Lock()
        self.client.client.on_publish = self._on_publish

    def _on_publish(self, *args: object) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        for p in payloads:
            self.client.publish(topic, p, content_type="application/cloudevents+json")


def make_node(tmp_path: Path, tag: str, mqtt_url: str, nats_url: str, overflow: str) -> Node:
    return Node(
        node_config(
            tmp_path,
            "solo",
            brokers={
                "plant": {"kind": "mqtt", "url": mqtt_url},
                "web": {"kind": "http"},
                "js": {"kind": "nats", "url": nats_url, "jetstream": True},
            },
            ingress=[{"from": "plant", "topic": f"{tag}/#"}, {"from": "web", "topic": f"{tag}/#"}],
            egress=[
                {
                    "to": "js",
                    "topic": f"{tag}/#",
                    "target": "bp.events",
                    "outbox": {"max_bytes": LIMIT, "overflow": overflow},
                }
            ],
        )
    )


async def test_block_stops_acknowledging_and_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, stream: NatsServer
) -> None:
    tag = unique()
    async with make_node(tmp_path, tag, mosquitto.url, stream.url, "block").serve() as node:
        await node.ready()
        stream.stop()  # the destination broker goes away
        box = node.egress_workers()[0].outbox
        pub = Publisher(mosquitto.url)
        payloads = mqtt_events(tag)
        rss = psutil.Process().memory_info().rss

        def ingested(name: str) -> int:
            return node.metrics.get(name, broker="plant")

        await asyncio.to_thread(pub.publish, f"{tag}/in", payloads[: N // 2])
        await wait_for(
            lambda: node.metrics.total("mesh_backpressure_total"),
            20,
            "the outbox to fill and push back",
        )
        await asyncio.sleep(1.0)
        # The node acknowledges a delivery to the broker only after routing it, so a
        # flat ingress count means nothing more was acknowledged: Mosquitto keeps
        # the rest of the messages in the node's session.
        stalled = ingested("mesh_ingress_events_total")
        assert stalled < N // 2, "ingress kept acknowledging with a full outbox"
        assert box.bytes <= LIMIT + OVERSHOOT

        # HTTP ingress answers 503 once the outbox cannot take one more event.
        extra: list[str] = []
        async with aiohttp.ClientSession() as http:
            for i in range(1000):
                ev = Event(
                    {"specversion": "1.0", "id": f"{tag}-http-{i}", "source": "/bp", "type": "t"},
                    b"x" * 300,
                )
                headers, body = encode_http(ev, Mode.BINARY)
                r = await http.post(
                    f"http://127.0.0.1:{node.port}/events/{tag}/web", data=body, headers=headers
                )
                if r.status != 202:
                    break
                extra.append(ev.id)
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"] == "1"
            assert "outbox" in (await r.json())["detail"]

        await asyncio.to_thread(pub.publish, f"{tag}/in", payloads[N // 2 :])
        await asyncio.sleep(1.0)
        assert ingested("mesh_ingress_events_total") == stalled  # still nothing acknowledged
        assert box.bytes <= LIMIT + OVERSHOOT
        growth = psutil.Process().memory_info().rss - rss
        assert growth < 40 << 20, f"memory grew by {growth >> 20} MiB while blocked"

        stream.start()  # recovery: everything flows, once
        await wait_for(
            lambda: ingested("mesh_ingress_events_total") == N, 60, "every message to be ingested"
        )
        await wait_for(lambda: box.depth == 0, 60, "the outbox to drain")
        ids = await stream_ids(stream)
        assert sorted(ids) == sorted([f"{tag}-{i}" for i in range(N)] + extra)
        assert node.metrics.total("mesh_dead_letters_total") == 0
        pub.client.close()


async def overflow(
    node: Node, tag: str, mosquitto: Mosquitto, stream: NatsServer
) -> tuple[Outbox, Publisher]:
    """With the stream down, publish N events into the node's small outbox: every
    one is ingested and acknowledged, and the outbox keeps to its bound."""
    await node.ready()
    stream.stop()
    pub = Publisher(mosquitto.url)
    await asyncio.to_thread(pub.publish, f"{tag}/in", mqtt_events(tag))
    await wait_for(
        lambda: node.metrics.total("mesh_ingress_events_total") == N,
        30,
        "every message ingested and acknowledged",
    )
    box = node.egress_workers()[0].outbox
    assert box.bytes <= LIMIT + OVERSHOOT
    return box, pub


async def test_drop_oldest_keeps_accepting_and_counts_what_it_dropped(
    tmp_path: Path, mosquitto: Mosquitto, stream: NatsServer
) -> None:
    tag = unique()
    async with make_node(tmp_path, tag, mosquitto.url, stream.url, "drop-oldest").serve() as node:
        box, pub = await overflow(node, tag, mosquitto, stream)
        dropped = node.metrics.get("mesh_dead_letters_total", reason="drop-oldest")
        assert dropped > N // 2
        assert await node.store.dlq_count() == dropped

        stream.start()
        await wait_for(lambda: box.depth == 0, 60, "the outbox to drain")
        ids = await stream_ids(stream)
        assert len(ids) == len(set(ids)) == N - dropped
        dead = await node.store.dead_letters(limit=N)
        assert all(d.reason == "outbox full (drop-oldest)" for d in dead)
        pub.client.close()


async def test_reject_new_keeps_the_first_and_dead_letters_each_new_event_once(
    tmp_path: Path, mosquitto: Mosquitto, stream: NatsServer
) -> None:
    tag = unique()
    async with make_node(tmp_path, tag, mosquitto.url, stream.url, "reject-new").serve() as node:
        box, pub = await overflow(node, tag, mosquitto, stream)
        rejected = node.metrics.get("mesh_dead_letters_total", reason="reject-new")
        assert rejected > N // 2
        dead = await node.store.dead_letters(limit=N)
        assert len(dead) == rejected, "each rejected event dead-lettered once"
        assert all(d.reason == "outbox full (reject-new)" for d in dead)
        dead_ids = [decode_record(d.record).event.id for d in dead]
        assert len(set(dead_ids)) == len(dead_ids)

        stream.start()
        await wait_for(lambda: box.depth == 0, 60, "the outbox to drain")
        ids = await stream_ids(stream)
        assert len(ids) == len(set(ids)) == N - rejected
        assert not set(ids) & set(dead_ids)
        # Reject-new keeps what came first.
        assert sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))[0] == f"{tag}-0"
        pub.client.close()
