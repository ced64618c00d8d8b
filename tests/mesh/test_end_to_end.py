"""Two sites, real brokers, a real peer link: the walking skeleton end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import nats
import orjson
from nats.aio.msg import Msg

from mesh.core.codec import decode_mqtt
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, node_config, unique, wait_for

TOKEN = "correct-horse"


async def test_mqtt_at_a_reaches_nats_at_b_and_http_at_b_reaches_mqtt_at_a(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    tag = unique()
    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}, "web": {"kind": "http"}},
        accept=[{"id": "site-a", "token": TOKEN}],
        ingress=[{"from": "web", "topic": f"{tag}/orders/#"}],
        egress=[
            {
                "to": "bus",
                "topic": "site-a/sensors/#",
                "filter": {"prefix": {"type": "com.example."}},
                "target": f"{tag}.telemetry.{{node}}.{{subject}}",
                "mode": "binary",
            }
        ],
    )
    async with Node(b_cfg).serve() as b:
        a_cfg = node_config(
            tmp_path,
            "site-a",
            brokers={"plant": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5}},
            peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": TOKEN}],
            ingress=[
                {
                    "from": "plant",
                    "topic": f"{tag}/sensors/+/temperature",
                    "mesh_topic": "site-a/sensors/{1}/temperature",
                    "event": {
                        "type": "com.example.sensor.temperature",
                        "source": "/site-a/sensors/{1}",
                        "subject": "{1}",
                    },
                }
            ],
            egress=[
                {
                    "to": "plant",
                    "topic": f"{tag}/orders/#",
                    "target": f"{tag}/shop/{{1}}",
                    "mode": "structured",
                }
            ],
        )
        async with Node(a_cfg).serve() as a:
            received: list[Msg] = []

            async def on_msg(msg: Msg) -> None:
                received.append(msg)

            nc = await nats.connect(nats_server.url)
            await nc.subscribe(f"{tag}.telemetry.site-a.>", cb=on_msg)
            await nc.flush()
            await a.ready()
            await b.ready()
            # Both sides know each other's interests before traffic starts.
            await wait_for(
                lambda: any(r.next_hop == "site-b" for r in a.table.routes()),
                what="site-a to learn site-b's interest",
            )
            await wait_for(
                lambda: any(r.next_hop == "site-a" for r in b.table.routes()),
                what="site-b to learn site-a's interest",
            )

            # 1,000 plain JSON payloads, QoS 1, at site A.
            device = MqttClient(mosquitto.url)
            payloads = [
                (
                    f"{tag}/sensors/t{i % 5}/temperature",
                    orjson.dumps({"seq": i, "celsius": 20 + i % 7, "unit": "C"}),
                )
                for i in range(1000)
            ]
            await asyncio.to_thread(device.publish_many, payloads)
            await wait_for(
                lambda: len(received) >= 1000, timeout=30, what="1000 events on NATS at site B"
            )
            await asyncio.sleep(0.3)
            assert len(received) == 1000
            sent_by_seq = {orjson.loads(p)["seq"]: (t, p) for t, p in payloads}
            seen = set()
            for msg in received:
                h = msg.headers or {}
                data = msg.data
                seq = orjson.loads(data)["seq"]
                topic, payload = sent_by_seq[seq]
                sensor = topic.split("/")[2]
                assert data == payload  # byte-identical data
                assert h["ce-specversion"] == "1.0"
                assert h["ce-type"] == "com.example.sensor.temperature"
                assert h["ce-source"] == f"/site-a/sensors/{sensor}"
                assert h["ce-subject"] == sensor
                assert h["ce-datacontenttype"] == "application/json"
                assert msg.subject == f"{tag}.telemetry.site-a.{sensor}"
                seen.add(seq)
            assert seen == set(range(1000))
            await nc.close()

            # A structured CloudEvent POSTed at site B arrives on MQTT at site A.
            shop = MqttClient(mosquitto.url)
            shop.subscribe(f"{tag}/shop/#")
            event = {
                "specversion": "1.0",
                "id": "order-1",
                "source": "/web/checkout",
                "type": "com.example.order.requested",
                "datacontenttype": "application/json",
                "subject": "o1",
                "tenant": "acme",
                "data": {"order": "o1", "total": 42.5},
            }
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"http://127.0.0.1:{b.port}/events/{tag}/orders/o1",
                    data=orjson.dumps(event),
                    headers={"content-type": "application/cloudevents+json; charset=utf-8"},
                )
                assert resp.status == 202, await resp.text()
            await wait_for(lambda: shop.messages, what="the order on MQTT at site A")
            msg = shop.messages[0]
            assert msg.topic == f"{tag}/shop/o1"
            assert msg.properties.ContentType.startswith("application/cloudevents+json")
            got = decode_mqtt(msg.payload, msg.properties.ContentType, [], "5")
            assert got is not None
            assert got.attrs == {k: v for k, v in event.items() if k != "data"}
            assert orjson.loads(got.data or b"") == event["data"]
            device.close()
            shop.close()
