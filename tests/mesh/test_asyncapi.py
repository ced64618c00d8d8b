"""Issue 15, acceptance 2: the AsyncAPI document of each demo site, from running nodes.

The three sites of the demo (config/*.yaml) run on real brokers (Mosquitto for
the shop, nats-server for core, HTTP for the warehouse) and link up; each
one's ``GET /api/asyncapi`` validates against the official AsyncAPI 3.0.0
schema with every ``$ref`` resolved, and lists the site's channels,
operations and message types, and the interests of the other sites that its
events reach. Changing a rule and running ``mesh reload`` changes the
document (read with ``mesh asyncapi --yaml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mesh.config import load_config
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer, free_port
from tests.asyncapi_check import assert_valid, resolve
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SITES = ("core", "shop", "warehouse")
RETAIL = "com.example.retail."

# What each demo site's document must list: channel addresses, and the message
# types of its own rules (ingress templates, egress filters).
EXPECTED: dict[str, dict[str, Any]] = {
    "shop": {
        "addresses": {"shop/out/{1}", "devices/{1}/telemetry", "shop/in/{1}"},
        "types": {
            "com.example.device.telemetry",
            RETAIL + "ShipmentDispatched",
            RETAIL + "OrderCompleted",
        },
        "bindings": {"mqtt"},
    },
    "core": {
        "addresses": {"core.out.{1}", "core.in.{1}", "core.telemetry.{node}.{subject}"},
        "types": {RETAIL + t for t in ("OrderRequested", "PaymentProcessed", "ShipmentDelivered")},
        "bindings": set(),
    },
    "warehouse": {
        "addresses": {"/events/retail/{1}", "/hooks/{1}", "/hooks/shipment-dispatched"},
        "types": {RETAIL + t for t in ("OrderConfirmed", "ShipmentPrepared", "ShipmentDispatched")},
        "bindings": {"http"},
    },
}


def demo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **ports: int) -> None:
    """The demo files' variables: free ports for the nodes (and webhooks), the brokers'."""
    for name in ("CORE_NODE_PORT", "SHOP_NODE_PORT", "WAREHOUSE_NODE_PORT"):
        monkeypatch.setenv(name, str(free_port()))
    for name in ("SHIPPING_PORT", "INVOICE_PORT"):
        monkeypatch.setenv(name, str(free_port()))  # nobody listens: no events go there
    for name, port in ports.items():
        monkeypatch.setenv(name, str(port))
    monkeypatch.setenv("MESH_DATA", str(tmp_path / "var"))


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[str, Any]:
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        if r.content_type == "application/yaml":
            return r.content_type, yaml.safe_load(await r.text())
        return r.content_type, await r.json()


def messages_of(doc: dict[str, Any], op: dict[str, Any]) -> set[str]:
    return {resolve(doc, resolve(doc, m["$ref"])["$ref"])["name"] for m in op["messages"]}


def check_site(site: str, doc: dict[str, Any], config: Any, others: set[str]) -> None:
    assert_valid(doc)
    want = EXPECTED[site]
    addresses = {c["address"] for c in doc["channels"].values()}
    assert want["addresses"] <= addresses, addresses
    ops = doc["operations"]
    local = [o for o in ops.values() if "x-origin" not in o]
    receives = [o for o in local if o["action"] == "receive"]
    sends = [o for o in local if o["action"] == "send"]
    assert (len(receives), len(sends)) == (len(config.ingress), len(config.egress)), ops
    types = {m["name"] for m in doc["components"]["messages"].values()}
    assert want["types"] <= types, types
    assert want["types"] <= set().union(*(messages_of(doc, o) for o in local))
    for o in local:
        assert set(o.get("bindings", {})) == want["bindings"], o
    assert {"mesh", *config.brokers} <= set(doc["servers"])
    for name, broker in config.brokers.items():
        url = getattr(broker, "url", None)
        if url is not None:
            assert doc["servers"][name]["host"] == url.split("://", 1)[1]
    # The mesh as seen from here: the other sites' interests, reached via a peer.
    remote = [o for o in ops.values() if "x-origin" in o]
    assert {o["x-origin"] for o in remote} == others, remote
    assert all(o["action"] == "send" and o["x-next-hop"] in others for o in remote)


async def test_each_demo_site_documents_its_channels_operations_and_types(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mosquitto: Mosquitto,
    nats_server: NatsServer,
) -> None:
    demo_env(monkeypatch, tmp_path, SHOP_MQTT_PORT=mosquitto.port, CORE_NATS_PORT=nats_server.port)
    configs = {s: load_config(ROOT / "config" / f"{s}.yaml") for s in SITES}
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for site in SITES:  # core first: the others dial it
            nodes[site] = await stack.enter_async_context(Node(configs[site]).serve())
        http = await stack.enter_async_context(aiohttp.ClientSession())

        for site, node in nodes.items():
            others = set(SITES) - {site}
            await wait_for(
                lambda node=node, others=others: others <= {r.origin for r in node.table.routes()},
                20.0,
                f"{site} to learn the interests of {others}",
            )
        for site, node in nodes.items():
            url = f"http://127.0.0.1:{node.port}/api/asyncapi"
            kind, doc = await fetch(http, url)
            assert kind == "application/json"
            check_site(site, doc, configs[site], set(SITES) - {site})
            assert doc["servers"]["mesh"]["host"] == f"127.0.0.1:{node.port}"
            # The same document as YAML, by query or by Accept (once routes settled:
            # a shorter path learned meanwhile changes a next hop).
            for _ in range(50):
                kind, doc = await fetch(http, url)
                as_yaml = [
                    await fetch(http, url + "?format=yaml"),
                    await fetch(http, url, Accept="application/yaml"),
                ]
                if as_yaml == [("application/yaml", doc)] * 2:
                    break
                await asyncio.sleep(0.1)
            assert as_yaml == [("application/yaml", doc)] * 2

        # The shop's events reach core and the warehouse: their types are listed too.
        _kind, shop = await fetch(http, f"http://127.0.0.1:{nodes['shop'].port}/api/asyncapi")
        reached: dict[str, set[str]] = {}
        for o in shop["operations"].values():
            if "x-origin" in o:
                reached.setdefault(o["x-origin"], set()).update(messages_of(shop, o))
        assert EXPECTED["core"]["types"] <= reached["core"], reached
        assert {RETAIL + "OrderConfirmed"} <= reached["warehouse"], reached


async def mesh_cli(*args: str) -> str:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_mesh_reload_with_a_changed_rule_changes_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_env(monkeypatch, tmp_path)
    path = tmp_path / "warehouse.yaml"
    data = yaml.safe_load((ROOT / "config" / "warehouse.yaml").read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    node = Node(load_config(path), source=str(path))
    async with node.serve():
        url = f"http://127.0.0.1:{node.port}"
        before = yaml.safe_load(await mesh_cli("asyncapi", "--url", url, "--yaml"))
        assert_valid(before)
        assert RETAIL + "ShipmentPrepared" in before["components"]["messages"]
        assert "send.cancellations" not in before["operations"]

        # One rule changed (the shipping hook no longer wants ShipmentPrepared), one added.
        data["egress"][0]["filter"]["any"] = [
            f for f in data["egress"][0]["filter"]["any"] if "ShipmentPrepared" not in str(f)
        ]
        data["egress"].append(
            {
                "name": "cancellations",
                "to": "web",
                "topic": "retail/order-cancelled",
                "filter": {
                    "all": [
                        {"exact": {"type": RETAIL + "OrderCancelled"}},
                        {"sql": "subject LIKE 'eu-%'"},
                    ]
                },
                "target": "http://127.0.0.1:${SHIPPING_PORT}/hooks/cancelled/{subject}",
                "on_error": {"retry": {"max_attempts": 5}, "then": "dead-letter"},
            }
        )
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        assert "reloaded" in await mesh_cli("reload", "--url", url)

        after = yaml.safe_load(await mesh_cli("asyncapi", "--url", url, "--yaml"))
        assert_valid(after)
        assert after != before
        messages = after["components"]["messages"]
        assert RETAIL + "ShipmentPrepared" not in messages
        assert RETAIL + "OrderCancelled" in messages
        op = after["operations"]["send.cancellations"]
        assert op["x-cesql-filter"] == "subject LIKE 'eu-%'"
        assert op["x-dlq"]["retry"]["max_attempts"] == 5
        assert op["bindings"] == {"http": {"method": "POST", "bindingVersion": "0.3.0"}}
        channel = resolve(after, op["channel"]["$ref"])
        assert channel["address"] == "/hooks/cancelled/{subject}"
        assert set(channel["parameters"]) == {"subject"}
        # The JSON of the CLI is the same document.
        assert json.loads(await mesh_cli("asyncapi", "--url", url)) == after
