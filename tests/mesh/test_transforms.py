"""Egress transforms with real brokers: a JSONata transform delivers the computed
data and the attributes it sets to NATS; a failing expression dead-letters the
event with the expression's error, never retried; an invalid expression is a
configuration error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from nats.aio.msg import Msg

from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, nats_collect, node_config, unique, wait_for

SUMMARY = '{"order": data.id, "total": $sum(data.items.(qty * price)), "shop": subject}'


def order(oid: str, *lines: tuple[int, float]) -> bytes:
    return orjson.dumps({"id": oid, "items": [{"qty": q, "price": p} for q, p in lines]})


async def test_a_jsonata_transform_delivers_the_computed_data(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    tag = unique()
    cfg = node_config(
        tmp_path,
        "site-a",
        brokers={
            "plant": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5},
            "bus": {"kind": "nats", "url": nats_server.url},
        },
        ingress=[
            {
                "from": "plant",
                "topic": f"{tag}/orders/+",
                "mesh_topic": "eu/orders/{1}",
                "event": {"type": "com.example.order.requested", "subject": "{1}"},
            }
        ],
        egress=[
            {
                "name": "summary",
                "to": "bus",
                "topic": "+/orders/#",
                "target": f"{tag}.summary.{{subject}}",
                "transform": {
                    "jsonata": SUMMARY,
                    "attributes": {"type": "com.example.order.summary", "region": "{1}"},
                },
            },
            {
                "name": "boom",
                "to": "bus",
                "topic": "+/orders/#",
                "target": f"{tag}.boom.{{subject}}",
                "transform": {"jsonata": 'data.items[qty > 9] ? $error("boom") : data'},
            },
            {
                "name": "typed",
                "to": "bus",
                "topic": "+/orders/#",
                "target": f"{tag}.typed.{{subject}}",
                "transform": {"jsonata": '{"n": data.id + 1}'},
            },
        ],
    )
    messages: list[Msg] = []

    def keep(msg: Msg) -> str:
        messages.append(msg)
        return msg.subject

    async with (
        Node(cfg).serve() as a,
        nats_collect(nats_server.url, f"{tag}.>", key=keep) as received,
    ):
        await a.ready()
        device = MqttClient(mosquitto.url)
        await asyncio.to_thread(
            device.publish_many,
            [
                (f"{tag}/orders/o1", order("o1", (2, 1.5), (1, 4))),
                (f"{tag}/orders/o2", order("o2", (10, 1))),
            ],
        )
        await wait_for(
            lambda: {f"{tag}.summary.o1", f"{tag}.summary.o2", f"{tag}.boom.o1"} <= set(received),
            what="the transformed events on NATS",
        )
        summary = {m.subject: m for m in messages}[f"{tag}.summary.o1"]
        assert orjson.loads(summary.data) == {"order": "o1", "total": 7, "shop": "o1"}
        headers = summary.headers or {}
        assert headers["ce-type"] == "com.example.order.summary"
        assert headers["ce-region"] == "eu"
        assert headers["ce-subject"] == "o1"
        assert headers["ce-datacontenttype"] == "application/json"
        # A transform that only passes the data on keeps it.
        boom = {m.subject: m for m in messages}[f"{tag}.boom.o1"]
        assert orjson.loads(boom.data) == orjson.loads(order("o1", (2, 1.5), (1, 4)))

        # $error on o2, and a type error on both: dead-lettered with the error, not retried.
        await wait_for(
            lambda: a.metrics.get("mesh_dead_letters_total", reason="egress failed") == 3,
            what="three events dead-lettered by their transforms",
        )
        reasons = sorted((e.place, e.reason) for e in await a.store.dead_letters())
        assert reasons == [
            ("egress:boom", "transform of egress boom failed: D3137: boom (at position 29)"),
            *[
                (
                    "egress:typed",
                    "transform of egress typed failed: T2001: The left side of the + "
                    "operator must evaluate to a number",
                )
            ]
            * 2,
        ]
        assert a.metrics.get("mesh_egress_failures_total", egress="boom") == 0
        await asyncio.sleep(0.2)
        assert sorted(received) == sorted(
            [f"{tag}.summary.o1", f"{tag}.summary.o2", f"{tag}.boom.o1"]
        )
        device.close()


async def test_an_invalid_expression_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "a"},
                "brokers": {"bus": {"kind": "nats", "url": "nats://127.0.0.1:4222"}},
                "egress": [
                    {
                        "to": "bus",
                        "topic": "#",
                        "target": "x",
                        "transform": {"jsonata": '{"total": $sum(data.items.(qty * price)}'},
                    }
                ],
            }
        )
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh.cli", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc
    out = proc.stdout + proc.stderr
    assert (
        "egress[0].transform.jsonata: invalid JSONata: S0202: Expected ), got } (at position 40)"
        in out
    ), out
