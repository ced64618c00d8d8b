"""JSON Schemas at the edge, with real brokers: an order that violates its schema,
published over MQTT at site A, is dead-lettered at A naming the failing path and
never reaches the consumer on NATS at site B; valid ones flow; over HTTP it gets
400 naming the path; ``mesh reload`` recompiles a changed schema; ``at: egress``
dead-letters from the egress outbox instead."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from mesh.config import load_config
from mesh.core.errors import ConfigErrors
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, config_data, nats_collect, node_config, unique, wait_for
from tests.mesh.test_reload import mesh_reload

TOKEN = "correct-horse"
PATH = "data.items[2].qty: -1 is less than the minimum of 1"


def order_schema(minimum: int) -> bytes:
    return orjson.dumps(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://example.com/schemas/order-requested.json",
            "type": "object",
            "required": ["id", "items"],
            "properties": {
                "id": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["qty"],
                        "properties": {"qty": {"type": "integer", "minimum": minimum}},
                    },
                },
            },
        }
    )


def order(oid: str, *qty: int) -> bytes:
    return orjson.dumps(
        {"id": oid, "items": [{"sku": f"s{i}", "qty": q} for i, q in enumerate(qty)]}
    )


def event_id(msg: Any) -> str:
    return str(orjson.loads(msg.data)["id"])


async def dead_reasons(node: Node) -> list[tuple[str, str]]:
    return [(e.place, e.reason) for e in await node.store.dead_letters()]


async def test_an_invalid_order_is_refused_at_site_a_and_valid_ones_reach_site_b(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    tag = unique()
    schema_file = tmp_path / "schemas" / "order-requested.json"
    schema_file.parent.mkdir()
    schema_file.write_bytes(order_schema(1))
    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        accept=[{"id": "site-a", "token": TOKEN}],
        egress=[{"to": "bus", "topic": "site-a/orders/#", "target": f"{tag}.orders.{{subject}}"}],
    )
    async with Node(b_cfg).serve() as b:
        a_cfg = node_config(
            tmp_path,
            "site-a",
            brokers={
                "plant": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5},
                "web": {"kind": "http"},
            },
            peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": TOKEN}],
            ingress=[
                {
                    "from": "plant",
                    "topic": f"{tag}/orders/+",
                    "mesh_topic": "site-a/orders/{1}",
                    "event": {
                        "type": "com.example.order.requested",
                        "source": "/site-a/shop",
                        "subject": "{1}",
                    },
                },
                {"from": "web", "topic": f"{tag}/web/+", "mesh_topic": "site-a/orders/{1}"},
            ],
            schemas=[{"type": "com.example.order.requested", "schema": str(schema_file)}],
        )
        a_file = tmp_path / "site-a.yaml"
        a_file.write_text(yaml.safe_dump(config_data(a_cfg, exclude_defaults=True)))
        async with (
            Node(load_config(a_file, env={}, overrides={}), source=str(a_file)).serve() as a,
            nats_collect(nats_server.url, f"{tag}.orders.>", key=event_id) as received,
        ):
            await a.ready()
            await b.ready()
            await wait_for(
                lambda: any(r.next_hop == "site-b" for r in a.table.routes()),
                what="site-a to learn site-b's interest",
            )
            device = MqttClient(mosquitto.url)
            await asyncio.to_thread(
                device.publish_many,
                [
                    (f"{tag}/orders/o1", order("o1", 1, 2)),
                    (f"{tag}/orders/o2", order("o2", 1, 2, -1)),
                    (f"{tag}/orders/o3", order("o3", 5)),
                ],
            )
            await wait_for(lambda: {"o1", "o3"} <= set(received), what="the valid orders at B")
            rejected = await wait_for(
                lambda: a.metrics.get(
                    "mesh_ingress_rejected_total", broker="plant", reason="schema"
                ),
                what="the schema rejection to be counted",
            )
            assert rejected == 1
            [(place, reason)] = await dead_reasons(a)
            assert place == "ingress:plant"
            assert reason.startswith(PATH) and str(schema_file) in reason
            [entry] = await a.store.dead_letters()
            assert orjson.loads(entry.record)["id"] == "o2"  # the message as it came
            async with aiohttp.ClientSession() as http:
                text = await (await http.get(f"http://127.0.0.1:{a.port}/metrics")).text()
                assert 'mesh_ingress_rejected_total{broker="plant",reason="schema"} 1.0' in text, (
                    text
                )

                # Over HTTP: 400 problem+json naming the path; a valid one is accepted.
                def ce(oid: str, *qty: int) -> bytes:
                    return orjson.dumps(
                        {
                            "specversion": "1.0",
                            "id": oid,
                            "source": "/web/checkout",
                            "type": "com.example.order.requested",
                            "subject": oid,
                            "datacontenttype": "application/json",
                            "data": orjson.loads(order(oid, *qty)),
                        }
                    )

                url = f"http://127.0.0.1:{a.port}/events/{tag}/web"
                structured = {"content-type": "application/cloudevents+json"}
                resp = await http.post(f"{url}/o4", data=ce("o4", 1, 1, -1), headers=structured)
                assert resp.status == 400
                assert resp.content_type == "application/problem+json"
                problem = await resp.json()
                assert problem["detail"].startswith(PATH), problem
                resp = await http.post(f"{url}/o5", data=ce("o5", 3), headers=structured)
                assert resp.status == 202, await resp.text()
                # Binary mode, plain text data: refused, saying it is not JSON.
                resp = await http.post(
                    f"{url}/o6",
                    data=b"three apples",
                    headers={
                        "ce-specversion": "1.0",
                        "ce-id": "o6",
                        "ce-source": "/web",
                        "ce-type": "com.example.order.requested",
                        "content-type": "text/plain",
                    },
                )
                assert resp.status == 400
                assert (await resp.json())["detail"].startswith(
                    "data is not JSON (datacontenttype text/plain)"
                )
            await wait_for(lambda: "o5" in received, what="the valid HTTP order at B")
            assert a.metrics.get("mesh_ingress_rejected_total", broker="web", reason="schema") == 2

            # A reload that changes the schema changes the verdict.
            schema_file.write_bytes(order_schema(-5))
            await mesh_reload(a.port)
            await asyncio.to_thread(device.publish, f"{tag}/orders/o7", order("o7", 1, 2, -1))
            await wait_for(lambda: "o7" in received, what="o7, valid under the new schema")
            # A schema that no longer loads fails the reload and keeps the one in force.
            schema_file.write_text("{not json")
            with pytest.raises(ConfigErrors, match=r"schemas\[0\]\.schema: .* is not JSON"):
                await a.reload_from_source()
            await asyncio.to_thread(device.publish, f"{tag}/orders/o8", order("o8", -2))
            await wait_for(lambda: "o8" in received, what="o8, still under the reloaded schema")
            await asyncio.sleep(0.3)
            assert sorted(received) == ["o1", "o3", "o5", "o7", "o8"]  # never o2, o4, o6
            device.close()


async def test_mesh_validate_names_an_unreadable_schema(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "a"},
                "schemas": [
                    {"type": "com.example.order.requested", "schema": "no/such/file.json"},
                    {"type": "x.*", "inline": {"type": "nonsense"}},
                ],
            }
        )
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh.cli", "validate", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode == 2, proc
    out = proc.stdout + proc.stderr
    assert "schemas[0].schema: cannot read no/such/file.json: No such file" in out, out
    assert "schemas[1].inline: not a valid JSON Schema" in out, out


async def test_at_egress_an_invalid_event_is_dead_lettered_from_that_egress(
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
                "mesh_topic": "orders/{1}",
                "event": {"type": "com.example.order.requested", "subject": "{1}"},
            }
        ],
        egress=[{"name": "to-bus", "to": "bus", "topic": "orders/#", "target": f"{tag}.{{1}}"}],
        schemas=[
            {
                "type": "com.example.order.*",
                "inline": orjson.loads(order_schema(1)),
                "at": "egress",
            }
        ],
    )
    async with (
        Node(cfg).serve() as a,
        nats_collect(nats_server.url, f"{tag}.>", key=event_id) as received,
    ):
        await a.ready()
        device = MqttClient(mosquitto.url)
        await asyncio.to_thread(
            device.publish_many,
            [
                (f"{tag}/orders/o1", order("o1", 1)),
                (f"{tag}/orders/o2", order("o2", 1, 1, -1)),
                (f"{tag}/orders/o3", order("o3", 2)),
            ],
        )
        await wait_for(lambda: {"o1", "o3"} <= set(received), what="the valid orders on NATS")
        await wait_for(
            lambda: a.metrics.get("mesh_dead_letters_total", reason="egress failed") == 1,
            what="the invalid order dead-lettered at egress",
        )
        [(place, reason)] = await dead_reasons(a)
        assert place == "egress:to-bus"
        assert reason == f"{PATH} (schema schemas[0].inline)"
        # Not retried, and not an ingress rejection: it entered the mesh.
        assert a.metrics.get("mesh_egress_failures_total", egress="to-bus") == 0
        assert a.metrics.get("mesh_ingress_rejected_total", broker="plant", reason="schema") == 0
        await asyncio.sleep(0.2)
        assert sorted(received) == ["o1", "o3"]
        device.close()
