"""The event catalog on real nodes and the real demo (issue 15, acceptance 3).

- After the demo runs, ``GET /api/catalog`` on one site lists every event type
  of the demo with its producing and consuming sites.
- Catalog entries cross links only within the sender's ``export`` for the
  peer, and travel on (a -> hub -> c): a type on a topic outside hub's export
  to c never reaches c's catalog, while hub shows both.
- ``mesh catalog --export DIR`` against a running node writes EventCatalog's
  layout; every ``index.mdx`` front matter parses as YAML with its fields.
- A malformed catalog frame from a raw peer is refused and counted; the link
  stays up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mesh.core import frames
from mesh.core.codec import Mode, encode_nats
from mesh.core.event import Event
from mesh.runtime import link
from mesh.runtime.node import Node
from mesh.testing import NatsServer
from tests.helpers import node_config, wait_for
from tests.mesh.meshnet import mesh_net

ROOT = Path(__file__).resolve().parents[2]
P = "com.example.retail."
DEMO = {  # type: (producing sites, consuming sites), from config/*.yaml and demo/services
    P + "OrderRequested": (["shop"], ["core"]),
    P + "PaymentProcessed": (["core"], ["core"]),
    P + "OrderConfirmed": (["core"], ["core", "warehouse"]),  # core: the audit transform
    P + "ShipmentPrepared": (["warehouse"], ["warehouse"]),
    P + "ShipmentDispatched": (["warehouse"], ["shop", "warehouse"]),
    P + "ShipmentDelivered": (["warehouse"], ["core"]),
    P + "OrderCompleted": (["core"], ["shop"]),
    "com.example.device.telemetry": (["shop"], ["core"]),
}


@pytest.mark.timeout(180)
def test_after_the_demo_any_site_lists_every_type_with_producers_and_consumers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "catalogs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "--duration",
            "14",
            "--rate",
            "5",
            "--catalog-out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for site in ("shop", "core", "warehouse"):
        catalog = json.loads((out / f"{site}.json").read_text())
        assert catalog["node"] == site
        got = {e["type"]: (e["producers"], e["consumers"]) for e in catalog["events"]}
        assert got == DEMO, f"{site}: {got}"
        for e in catalog["events"]:
            assert e["count"] > 0 and e["first_seen"] <= e["last_seen"], e
            assert e["topics"] and e["sources"], e
    telemetry = next(
        e
        for e in json.loads((out / "core.json").read_text())["events"]
        if e["type"] == "com.example.device.telemetry"
    )
    assert telemetry["topics"] == ["telemetry/shop/+"]  # device ids collapsed
    assert telemetry["sources"] == ["/shop/devices/*"]


def _event(type_: str, event_id: str) -> Event:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/a/app", "type": type_}
    return Event(attrs, b'{"ok": true}', json_implied=True)


async def _catalog(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/api/catalog") as resp,
    ):
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


def _types(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in data["events"]}


async def test_entries_travel_within_export_rules_and_export_writes_eventcatalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link, "CATALOG_EVERY", 0.2)
    rules = {("hub", "c"): {"export": ["in/public/#"]}}
    async with mesh_net(
        tmp_path,
        ["a", "hub", "c"],
        [("a", "hub"), ("c", "hub")],
        {"c": ["in/#"]},
        rules=rules,
    ) as net:
        hub = net.node("hub")
        await wait_for(lambda: "c" in hub.sessions and "a" in hub.sessions, 10, "links")
        # c's interest must reach a first, so the public event crosses hub (hub sees it too).
        await wait_for(
            lambda: any(r.origin == "c" for r in net.node("a").table.routes()), 10, "routes at a"
        )
        nc = net.members["a"].nc
        assert nc is not None
        for type_, subject in (("t.public", "in.public.1"), ("t.private", "in.private.1")):
            payload, headers = encode_nats(_event(type_, subject), Mode.BINARY)
            await nc.publish(subject, payload, headers=headers)
        await net.flush()

        async def hub_knows_both() -> bool:
            return {"t.public", "t.private"} <= set(_types(await _catalog(hub.port)))

        async def c_knows_public() -> bool:
            return "t.public" in _types(await _catalog(net.node("c").port))

        await _until(hub_knows_both, "hub's catalog")
        await _until(c_knows_public, "c's catalog")
        await asyncio.sleep(1.0)  # several more rounds of catalog frames
        at_c = _types(await _catalog(net.node("c").port))
        assert "t.private" not in at_c, "a type outside hub's export to c reached c"
        pub = at_c["t.public"]
        assert pub["producers"] == ["a"] and pub["consumers"] == ["c"]
        assert pub["topics"] == ["in/public/+"]
        assert "a" in pub["reported_by"] and "hub" in pub["reported_by"]
        at_hub = _types(await _catalog(hub.port))
        # hub took c's in/# narrowed to its export (in/public/#): nobody consumes t.private.
        assert at_hub["t.private"]["consumers"] == []
        assert at_hub["t.public"]["consumers"] == ["c"]
        # The types hub routed itself are messages of its AsyncAPI document too; one
        # it only heard of from a (t.private never crossed it) is not.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.port}/api/asyncapi") as resp,
        ):
            doc = await resp.json()
        titles = {m.get("name") for m in doc["components"]["messages"].values()}
        assert "t.public" in titles and "t.private" not in titles, titles

        # mesh catalog --export against the running node c.
        out = tmp_path / "eventcatalog"
        url = f"http://127.0.0.1:{net.node('c').port}"
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mesh.cli", "catalog", "--url", url, "--export", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    events = sorted(out.glob("events/*/index.mdx"))
    services = sorted(out.glob("services/*/index.mdx"))
    assert [p.parent.name for p in events] == ["t.public"]
    assert {p.parent.name for p in services} == {"a", "c"}
    for path in events:
        fm = front_matter(path)
        assert fm["id"] == path.parent.name and fm["name"] == "public"
        assert fm["version"] == "0.0.1" and isinstance(fm["summary"], str)
        if "schemaPath" in fm:
            assert (path.parent / fm["schemaPath"]).is_file()
    sends = front_matter(out / "services/a/index.mdx")
    receives = front_matter(out / "services/c/index.mdx")
    assert sends["sends"] == [{"id": "t.public", "version": "0.0.1"}]
    assert receives["receives"] == [{"id": "t.public", "version": "0.0.1"}]
    for fm in (sends, receives):
        assert {"id", "name", "version", "summary", "sends", "receives"} <= set(fm)


async def _until(check: Any, what: str, tries: int = 150) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), path
    head, _body = text[4:].split("\n---\n", 1)
    data = yaml.safe_load(head)
    assert isinstance(data, dict), path
    return data


async def test_a_malformed_catalog_frame_is_refused_and_counted_and_the_link_stays(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    cfg = node_config(
        tmp_path,
        "hub",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        accept=[{"id": "raw", "token": "raw-token"}],
    )
    async with Node(cfg).serve() as hub, aiohttp.ClientSession() as http:
        await hub.ready()
        ws = await http.ws_connect(f"http://127.0.0.1:{hub.port}/mesh")
        await ws.send_str(frames.hello("raw", "", "raw-token"))
        welcome = frames.parse_welcome((await ws.receive(timeout=10)).data, "hub")
        assert isinstance(welcome, frames.Welcome) and welcome.version >= 4
        good = {
            "type": "t.raw",
            "sources": ["/raw"],
            "topics": ["raw/+"],
            "producers": ["raw"],
            "count": 1,
            "rate": 0.1,
            "first_seen": 1.0,
            "last_seen": 2.0,
            "example": None,
            "path": ["raw"],
        }
        bad = [{"type": 5}, dict(good, path=["other"]), dict(good, topics=["a/#/b"])]
        await ws.send_str(frames.dump({"type": "catalog", "entries": [*bad, good]}))
        await ws.send_str(frames.dump({"type": "catalog", "entries": "junk"}))
        await wait_for(lambda: hub.metrics.total("mesh_catalog_refused_total") == 4, 10, "refusals")
        assert "raw" in hub.sessions and not ws.closed
        # An entry whose path runs through hub (a loop) is ignored, not refused.
        looped = dict(good, type="t.loop", path=["hub", "raw"])
        await ws.send_str(frames.dump({"type": "catalog", "entries": [good, looped]}))
        await wait_for(
            lambda: any(e["type"] == "t.raw" for e in hub.catalog.view([])), 10, "the entry"
        )
        [entry] = hub.catalog.view(hub.table.routes())
        assert entry["reported_by"] == ["raw"] and entry["producers"] == ["raw"]
        assert hub.metrics.get("mesh_catalog_refused_total", peer="raw", reason="path") == 1
        await ws.close()
