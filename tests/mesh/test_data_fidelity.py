"""Acceptance 6: JSON data sent in structured mode arrives byte-identical in binary mode.

Two nodes, real brokers: node A takes a structured CloudEvent over HTTP and
over MQTT 5; node B sends it on in binary mode to NATS and to MQTT 5. Its
data holds a 30-digit integer, ``1.50`` and odd whitespace, which a
re-serialising decoder would turn into ``1.2345678901234568e+29``, ``1.5``
and compact JSON. What arrives is compared as raw bytes on plain clients.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import nats
from nats.aio.msg import Msg

from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, node_config, unique, wait_for

TOKEN = "fidelity-token"
DATA = (
    b'{ "big" :  123456789012345678901234567890,\n\t"price": 1.50 ,"z":[1.0 , "\\"}"], "a": {}  }'
)


def structured(event_id: str, subject: str) -> bytes:
    return (
        b'{"specversion":"1.0","id":"' + event_id.encode() + b'","source":"/fidelity",'
        b'"type":"com.example.fidelity","subject":"' + subject.encode() + b'",'
        b'"datacontenttype":"application/json","data" :\n ' + DATA + b"\n}"
    )


async def test_structured_json_data_arrives_byte_identical_in_binary_mode(
    tmp_path: Path,
    mosquitto: Mosquitto,
    mosquitto_b: Mosquitto,
    nats_server_b: NatsServer,
) -> None:
    tag = unique("fid")
    sub = MqttClient(mosquitto_b.url)
    sub.subscribe(f"{tag}/out/#")
    nc = await nats.connect(nats_server_b.url)
    at_nats: list[Msg] = []

    async def on_nats(msg: Msg) -> None:
        at_nats.append(msg)

    await nc.subscribe(f"{tag}.out.>", cb=on_nats)
    await nc.flush()
    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={
            "m5": {"kind": "mqtt", "url": mosquitto_b.url, "protocol": 5},
            "bus": {"kind": "nats", "url": nats_server_b.url},
        },
        accept=[{"id": "site-a", "token": TOKEN}],
        egress=[
            {"to": "m5", "topic": f"{tag}/#", "target": f"{tag}/out/{{subject}}", "mode": "binary"},
            {
                "to": "bus",
                "topic": f"{tag}/#",
                "target": f"{tag}.out.{{subject}}",
                "mode": "binary",
            },
        ],
    )
    try:
        async with Node(b_cfg).serve() as b:
            a_cfg = node_config(
                tmp_path,
                "site-a",
                brokers={
                    "m5": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5},
                    "web": {"kind": "http"},
                },
                peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": TOKEN}],
                ingress=[
                    {"from": "web", "topic": f"{tag}/http/#"},
                    {"from": "m5", "topic": f"{tag}/mqtt/#"},
                ],
            )
            async with Node(a_cfg).serve() as a:
                await a.ready()
                await b.ready()
                await wait_for(
                    lambda: any(r.next_hop == "site-b" for r in a.table.routes()),
                    what="B's interests at A",
                )
                async with aiohttp.ClientSession() as http:
                    r = await http.post(
                        f"http://127.0.0.1:{a.port}/events/{tag}/http/in",
                        data=structured("e-http", "http"),
                        headers={"content-type": "application/cloudevents+json"},
                    )
                    assert r.status == 202, await r.text()
                pub = MqttClient(mosquitto.url)
                try:
                    pub.publish(
                        f"{tag}/mqtt/in",
                        structured("e-mqtt", "mqtt"),
                        content_type="application/cloudevents+json; charset=utf-8",
                    ).wait_for_publish(10)
                finally:
                    pub.close()
                await wait_for(
                    lambda: len(at_nats) >= 2 and len(sub.messages) >= 2,
                    20.0,
                    "two events at NATS and at MQTT 5",
                )
                await asyncio.sleep(0.3)  # anything more would be a duplicate
    finally:
        await nc.close()
        sub.close()

    assert sorted(m.subject for m in at_nats) == [f"{tag}.out.http", f"{tag}.out.mqtt"]
    for msg in at_nats:
        assert msg.data == DATA
        assert msg.headers is not None
        assert msg.headers["ce-datacontenttype"] == "application/json"
        assert msg.headers["ce-id"] == "e-" + msg.subject.rsplit(".", 1)[1]
    assert sorted(m.topic for m in sub.messages) == [f"{tag}/out/http", f"{tag}/out/mqtt"]
    for m in sub.messages:
        assert m.payload == DATA
        assert m.properties.ContentType == "application/json"
        user = dict(m.properties.UserProperty)
        assert user["id"] == "e-" + m.topic.rsplit("/", 1)[1]
        assert user["specversion"] == "1.0"
