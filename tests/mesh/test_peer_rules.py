"""Per-peer import and export rules on real links (issue 12, acceptance 2).

- A peer advertising an interest we do not export receives nothing for it,
  even for events that only transit us; narrowing keeps the part we export.
- A raw, misbehaving peer sending events outside our import has them dropped
  at the link and counted, while its allowed events keep arriving.
- Events queued for a peer before its export was narrowed are dropped at send.
- Every rule change applies with ``mesh reload`` and the link stays the same
  session.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from mesh.core import frames
from mesh.core.envelope import Envelope, encode_batch_frame, encode_record
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import NatsServer
from tests.helpers import config_data, nats_collect, node_config, wait_for
from tests.mesh.meshnet import mesh_net

pytestmark = pytest.mark.timeout(90)


def denied(node: Node, peer: str, direction: str) -> int:
    return node.metrics.get("mesh_link_denied_events_total", peer=peer, direction=direction)


async def test_an_interest_outside_our_export_gets_nothing_even_in_transit(
    tmp_path: Path,
) -> None:
    # a -> hub <- c : c subscribes to in/#, hub exports only in/public/# to c.
    rules = {("hub", "c"): {"export": ["in/public/#"]}}
    async with mesh_net(
        tmp_path, ["a", "hub", "c"], [("a", "hub"), ("c", "hub")], {"c": ["in/#"]}, rules=rules
    ) as net:
        hub = net.node("hub")
        await wait_for(lambda: "c" in hub.sessions and "a" in hub.sessions, 10, "links")
        await wait_for(
            lambda: any(r.origin == "c" for r in net.node("a").table.routes()), 10, "routes at a"
        )
        # Installed narrowed at hub; a hears only the narrowed interest.
        assert {r.pattern for r in hub.table.routes() if r.origin == "c"} == {"in/public/#"}
        assert {r.pattern for r in net.node("a").table.routes() if r.origin == "c"} == {
            "in/public/#"
        }
        session = hub.sessions["c"]
        await net.publish("a", "in.public.1", "pub-1")
        await net.publish("a", "in.private.1", "priv-1")  # transit a -> hub -> c
        await net.publish("hub", "in.private.2", "priv-2")  # from hub itself
        await net.flush()
        await wait_for(lambda: "pub-1" in net.received()["c"], 10, "the public event")
        await asyncio.sleep(0.5)
        assert net.received()["c"] == ["pub-1"]

        # Widen the export: the same link, now private events flow too.
        net.set_rules("hub", "c", {"export": ["#"]})
        await hub.reload_from_source()
        await wait_for(
            lambda: (
                {r.pattern for r in net.node("a").table.routes() if r.origin == "c"} == {"in/#"}
            ),
            10,
            "the widened interest at a",
        )
        await net.publish("a", "in.private.3", "priv-3")
        await net.flush()
        await wait_for(lambda: "priv-3" in net.received()["c"], 10, "the private event")
        assert hub.sessions["c"] is session, "the link stayed up across the reload"
        assert hub.metrics.get("mesh_link_sessions_total", peer="c") == 1

        # Narrow it to nothing c asked for: the interest is refused, nothing flows.
        net.set_rules("hub", "c", {"export": ["elsewhere/#"]})
        await hub.reload_from_source()
        await wait_for(lambda: not [r for r in hub.table.routes() if r.origin == "c"], 10, "gone")
        await net.publish("hub", "in.public.4", "pub-4")
        await net.flush()
        await asyncio.sleep(0.5)
        assert "pub-4" not in net.received()["c"]
        assert hub.sessions["c"] is session


async def test_events_queued_before_the_export_narrowed_are_dropped_at_send(
    tmp_path: Path,
) -> None:
    async with mesh_net(
        tmp_path, ["hub", "c"], [("c", "hub")], {"c": ["in/#"]}, proxied=[("c", "hub")]
    ) as net:
        hub = net.node("hub")
        await wait_for(lambda: any(r.origin == "c" for r in hub.table.routes()), 10, "routes")
        net.proxies[("c", "hub")].blackhole()
        net.proxies[("c", "hub")].reset()
        await wait_for(lambda: "c" not in hub.sessions, 20, "the link to drop")
        await net.publish("hub", "in.public.1", "pub-1")
        await net.publish("hub", "in.private.1", "priv-1")
        await net.flush()
        await wait_for(lambda: hub.outboxes.find("peer:c").depth == 2, 10, "two queued events")
        net.set_rules("hub", "c", {"export": ["in/public/#"]})
        await hub.reload_from_source()
        net.proxies[("c", "hub")].restore()
        await wait_for(lambda: "pub-1" in net.received()["c"], 30, "the public event")
        await wait_for(lambda: denied(hub, "c", "export") == 1, 10, "the private one dropped")
        assert net.received()["c"] == ["pub-1"]
        await wait_for(lambda: hub.outboxes.find("peer:c").depth == 0, 10, "c's ack")


def record(event_id: str, topic: str, origin: str = "raw") -> bytes:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/raw", "type": "t"}
    return encode_record(Envelope(Event(attrs, b"{}", json_implied=True), topic, origin, 1))


async def test_events_outside_our_import_from_a_raw_peer_are_dropped_and_counted(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    cfg = node_config(
        tmp_path,
        "hub",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        egress=[{"to": "bus", "topic": "raw/#", "target": "rules.{id}"}],
        accept=[{"id": "raw", "token": "raw-token", "import": ["raw/ok/#"]}],
    )
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config_data(cfg, exclude_defaults=True)))

    async with (
        Node(cfg, source=str(path)).serve() as hub,
        nats_collect(nats_server.url, "rules.>") as received,
        aiohttp.ClientSession() as http,
    ):
        await hub.ready()
        ws = await http.ws_connect(f"http://127.0.0.1:{hub.port}/mesh")
        await ws.send_str(frames.hello("raw", "", "raw-token"))
        welcome = frames.parse_welcome((await ws.receive(timeout=10)).data, "hub")
        assert isinstance(welcome, frames.Welcome), welcome
        advertised: list[str] = []
        acked: list[int] = []

        async def read() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                obj = orjson.loads(msg.data)
                if obj["type"] == "interests":
                    advertised.extend(i["pattern"] for i in obj["add"])
                elif obj["type"] == "ack":
                    acked.append(obj["seq"])

        reader = asyncio.create_task(read())
        try:
            # What hub tells raw is narrowed by its import for raw.
            await wait_for(lambda: advertised, 10, "hub's interests")
            assert advertised == ["raw/ok/#"]
            batch = [
                record("ok-1", "raw/ok/1"),
                record("bad-1", "raw/bad/1"),
                record("ok-2", "raw/ok/2"),
            ]
            await ws.send_bytes(encode_batch_frame(1, batch))
            await wait_for(lambda: 1 in acked, 10, "the ack (a drop is still acknowledged)")
            await wait_for(lambda: {"ok-1", "ok-2"} <= set(received), 10, "the allowed events")
            assert denied(hub, "raw", "import") == 1
            assert "bad-1" not in received
            [row] = [p for p in hub.peers() if p["id"] == "raw"]  # what mesh peers shows
            assert (row["import"], row["export"], row["behind"]) == (["raw/ok/#"], ["#"], ["raw"])

            # Widen the import by reload: the same session takes the next one.
            session = hub.sessions["raw"]
            text = path.read_text().replace("raw/ok/#", "raw/#")
            path.write_text(text)
            await hub.reload_from_source()
            await wait_for(lambda: "raw/#" in advertised, 10, "the widened interest")
            await ws.send_bytes(encode_batch_frame(2, [record("bad-2", "raw/bad/2")]))
            await wait_for(lambda: "bad-2" in received, 10, "the now-allowed event")
            assert hub.sessions["raw"] is session and not ws.closed
            assert denied(hub, "raw", "import") == 1
        finally:
            reader.cancel()
            await ws.close()


async def test_a_node_without_subscriptions_is_announced_so_its_events_pass_the_origin_check(
    tmp_path: Path,
) -> None:
    # c -> b -> hub: only hub subscribes. c's events reach hub through b with origin c,
    # which hub accepts because b announced c in its reach.
    async with mesh_net(
        tmp_path, ["c", "b", "hub"], [("c", "b"), ("b", "hub")], {"hub": ["in/#"]}
    ) as net:
        hub = net.node("hub")
        await wait_for(lambda: hub.table.behind("b") >= {"b", "c"}, 10, "c in b's reach")
        await wait_for(
            lambda: any(r.origin == "hub" for r in net.node("c").table.routes()), 10, "routes"
        )
        for n in range(5):
            await net.publish("c", f"in.from.c.{n}", f"c-{n}")
        await net.flush()
        await wait_for(lambda: len(net.received()["hub"]) == 5, 10, "c's events at hub")
        for name in net.names:
            assert net.node(name).metrics.total("mesh_link_forged_events_total") == 0, name


async def test_reach_is_persisted_so_queued_events_pass_the_check_after_a_restart(
    tmp_path: Path,
) -> None:
    cfg = node_config(tmp_path, "hub", accept=[{"id": "*", "token": "t"}])
    async with Node(cfg).serve() as hub:
        hub.table.set_reach("b", [("b",), ("c", "b")])
        hub.table.set_reach("x", [("y", "hub", "x")])  # through us: refused, not kept
        await hub.persist_routes()
    async with Node(cfg).serve() as hub:
        assert hub.table.behind("b") == {"b", "c"}
        assert hub.table.behind("x") == {"x"}
