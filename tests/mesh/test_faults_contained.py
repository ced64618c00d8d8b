"""Faults a node once could not survive now stay local: the node keeps serving.

Each case sends a real node (real nats-server behind it) something that used
to stop, wedge or poison it, then checks the node still delivers, and that
the fault was refused with a reason and counted:

- an HTTP request with a non-UTF-8 byte in a header (no credentials needed);
- an interest pattern the router cannot parse (``a/#/b``), from a peer, which
  must be refused and never persisted, and a bad pattern already persisted,
  which must be dropped at start, not be fatal;
- a ``LIKE`` filter of 200 ``%`` segments from a peer, matched against a
  10 KB value (a backtracking matcher froze the loop for 20.9 s);
- a peer answering the hello with a list; a peer sending past its credit;
- an event stored in an outbox that the encoder cannot handle;
- a reload with a queue group paho would reject (it raised outside the bridge).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from mesh.config import MeshConfig, load_config, parse_config
from mesh.core import frames
from mesh.core.envelope import Envelope, encode_batch_frame, encode_record
from mesh.core.errors import ConfigErrors
from mesh.core.event import Event
from mesh.runtime.link import CLOSE_PROTOCOL
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, config_data, nats_collect, node_config, unique, wait_for

TOKEN = "faults-token"
PEER = "peer-x"


def config(tmp_path: Path, nats_server: NatsServer, tag: str) -> MeshConfig:
    return node_config(
        tmp_path,
        "solo",
        brokers={"web": {"kind": "http"}, "bus": {"kind": "nats", "url": nats_server.url}},
        ingress=[{"from": "web", "topic": f"{tag}/#"}],
        egress=[{"to": "bus", "topic": f"{tag}/#", "target": f"out.{tag}.{{id}}"}],
        accept=[{"id": PEER, "token": TOKEN}],
    )


class Site:
    def __init__(self, node: Node, tag: str, received: list[str]) -> None:
        self.node = node
        self.tag = tag
        self.received = received

    async def post(self, event_id: str, subject: str = "s", topic: str = "x") -> int:
        """A structured CloudEvent (a 10 KB subject does not fit an HTTP header)."""
        event = {"specversion": "1.0", "id": event_id, "source": "/faults", "type": "t"}
        body = orjson.dumps({**event, "subject": subject, "data": {}})
        headers = {"content-type": "application/cloudevents+json"}
        url = f"http://127.0.0.1:{self.node.port}/events/{self.tag}/{topic}"
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers=headers) as r,
        ):
            return r.status

    async def still_delivers(self, event_id: str) -> None:
        assert await self.post(event_id) == 202
        await wait_for(lambda: event_id in self.received, 10, f"{event_id} at NATS")


@pytest.fixture
async def site(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Site]:
    tag = unique("faults")
    node = Node(config(tmp_path, nats_server, tag))
    async with nats_collect(nats_server.url, f"out.{tag}.>") as received, node.serve():
        await node.ready()
        yield Site(node, tag, received)


async def test_a_non_utf8_header_byte_is_refused_and_the_node_keeps_serving(site: Site) -> None:
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", site.node.port)
        writer.write(
            f"POST /events/{site.tag}/x HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"ce-specversion: 1.0\r\nce-id: 1\r\nce-source: /s\r\nce-type: t\r\n"
            + b"ce-subject: caf\xe9\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 4"), status_line
    await site.still_delivers("after-bad-header")
    # The refused requests reached the dead-letter queue, and the store thread
    # that wrote them lives on.
    assert await asyncio.wait_for(site.node.store.dlq_count(), 5) == 3
    rejected = site.node.metrics.total("mesh_ingress_rejected_total")
    assert rejected == 3, rejected


async def join(site: Site) -> Any:
    """Dial the node as ``peer-x``; return the session and the websocket."""
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"ws://127.0.0.1:{site.node.port}/mesh")
    await ws.send_str(frames.hello(PEER, "", TOKEN))
    welcome = frames.parse_welcome((await ws.receive()).data, "solo")
    assert isinstance(welcome, frames.Welcome), welcome
    return http, ws


def interest(pattern: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"origin": PEER, "pattern": pattern, "path": [PEER]}
    if spec is not None:
        item["filter"] = spec
    return item


LIKE_200 = "'" + "%a" * 200 + "%b'"


async def test_bad_interests_from_a_peer_are_refused_counted_and_never_stored(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    http, ws = await join(site)
    try:
        with caplog.at_level(logging.WARNING):
            frame = {
                "type": "interests",
                "full": True,
                "add": [
                    interest("a/#/b"),
                    interest(f"{site.tag}/like/#", {"sql": f"subject LIKE {LIKE_200}"}),
                    interest(f"{site.tag}/good/#"),
                ],
            }
            await ws.send_str(frames.dump(frame))
            m = site.node.metrics
            await wait_for(
                lambda: m.get("mesh_interests_refused_total", peer=PEER, reason="pattern") == 1,
                10,
                "the refusal to be counted",
            )
        patterns = {r.pattern for r in site.node.table.routes() if r.origin == PEER}
        assert patterns == {f"{site.tag}/like/#", f"{site.tag}/good/#"}
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # logged once for the frame, not per retry

        # The LIKE interest is evaluated for every event on its topic: a 10 KB
        # subject that almost matches must not stall the node.
        started = time.monotonic()
        assert await site.post("like-1", subject="a" * 10_000, topic="like/x") == 202
        assert time.monotonic() - started < 2, "a LIKE filter stalled the node"
        await wait_for(lambda: "like-1" in site.received, 10, "like-1 at NATS")
        await site.still_delivers("after-bad-interests")

        await site.node.persist_routes()
        saved = orjson.loads(await site.node.store.get("learned-interests") or b"{}")
        assert sorted(i["pattern"] for i in saved[PEER]) == [
            f"{site.tag}/good/#",
            f"{site.tag}/like/#",
        ]
    finally:
        await ws.close()
        await http.close()


async def test_a_bad_persisted_pattern_is_dropped_at_start_not_fatal(
    tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    tag = unique("faults")
    cfg = config(tmp_path, nats_server, tag)
    async with Node(cfg).serve() as node:
        await node.ready()
        poisoned = {PEER: [interest("a/#/b"), interest(f"{tag}/good/#")]}
        await node.store.put("learned-interests", orjson.dumps(poisoned))
    with caplog.at_level(logging.WARNING):
        async with Node(cfg).serve() as node:  # the restart
            await node.ready()
            assert {r.pattern for r in node.table.routes() if r.origin == PEER} == {f"{tag}/good/#"}
            assert (
                node.metrics.get("mesh_interests_refused_total", peer="(restored)", reason="stored")
                == 1
            )
    assert sum("persisted route via" in r.getMessage() for r in caplog.records) == 1


async def test_a_peer_answering_the_hello_with_a_list_is_contained(
    tmp_path: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The dialing node closes the link, counts and logs it once, redials with
    backoff, and every other flow keeps delivering."""
    hellos = 0

    async def mesh(request: web.Request) -> web.WebSocketResponse:
        nonlocal hellos
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        hellos += 1
        await ws.send_str("[]")  # a welcome that is a list
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/mesh", mesh)
    runner = web.AppRunner(app)
    await runner.setup()
    fake = web.TCPSite(runner, "127.0.0.1", 0)
    await fake.start()
    port = runner.addresses[0][1]
    tag = unique("faults")
    async with nats_collect(nats_server.url, f"out.{tag}.>") as received:
        data = config_data(config(tmp_path, nats_server, tag))
        data["peers"] = [{"id": "liar", "url": f"ws://127.0.0.1:{port}/mesh", "token": TOKEN}]
        cfg = parse_config(data, "<liar>", env={}, overrides={})
        try:
            with caplog.at_level(logging.WARNING):
                async with Node(cfg).serve() as node:
                    await node.ready()
                    site = Site(node, tag, received)
                    await wait_for(lambda: hellos >= 3, 10, "the node to redial")
                    await site.still_delivers("beside-a-lying-peer")
                    assert "liar" not in node.sessions
                    restarts = node.metrics.get("mesh_task_restarts_total", task="link[liar]")
                    assert restarts >= 3
            # Backoff: a handful of dials in these seconds, not a spin.
            assert hellos <= 12, hellos
            logged = [r for r in caplog.records if "must be a JSON object" in r.getMessage()]
            assert len(logged) == 1, [r.getMessage() for r in logged]
        finally:
            await runner.cleanup()


async def test_a_stored_event_the_encoder_chokes_on_is_dead_lettered_not_a_crash_loop(
    site: Site,
) -> None:
    """A record no check foresaw (here an attribute of the wrong type, as an
    older version could have stored it) fails its own event, not the worker."""
    node = site.node
    [box] = node.router.egress_boxes.values()
    attrs: Any = {"specversion": "1.0", "id": "odd", "source": "/f", "type": {"a": 1}}
    record = encode_record(Envelope(Event(attrs, None), f"{site.tag}/x", "solo", 0))
    await node.outboxes.put([(None, [(box, record, None)])])
    await site.still_delivers("after-odd")
    await wait_for(
        lambda: node.metrics.get("mesh_dead_letters_total", reason="egress failed") == 1,
        10,
        "the odd event dead-lettered",
    )
    [entry] = await node.store.dead_letters()
    assert "cannot encode" in entry.reason and entry.place == box.name
    restarts = {
        k: v for k, v in node.metrics.counters.items() if k[0] == "mesh_task_restarts_total"
    }
    assert not restarts, restarts


async def test_a_peer_that_ignores_its_credit_has_its_link_closed_with_the_reason(
    site: Site,
) -> None:
    node = site.node
    credit = node.config.limits.link_credit
    records = [
        encode_record(
            Envelope(
                Event({"specversion": "1.0", "id": f"c{i}", "source": "/c", "type": "t"}),
                f"{site.tag}/x",
                PEER,
                1,
            )
        )
        for i in range(credit + 1)
    ]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{node.port}/mesh")
        await ws.send_str(frames.hello(PEER, "r", TOKEN))
        welcome = frames.parse_welcome((await ws.receive(timeout=10)).data, "solo")
        assert isinstance(welcome, frames.Welcome)
        await ws.send_bytes(encode_batch_frame(1, records))
        while (msg := await ws.receive(timeout=10)).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        ):
            pass
        assert ws.close_code == CLOSE_PROTOCOL
        assert f"credit for {credit}" in (msg.extra or "")
    assert node.metrics.get("mesh_link_protocol_errors_total", peer=PEER) == 1
    await site.still_delivers("after-the-greedy-peer")
    assert not [r for r in site.received if r.startswith("c")], "an event over credit passed"


async def test_a_queue_group_mqtt_would_reject_is_refused_on_reload_and_the_flow_goes_on(
    tmp_path: Path,
    mosquitto: Mosquitto,
    nats_server: NatsServer,
) -> None:
    """paho raised ValueError for a `+` in a shared-subscription group, outside the
    bridge: now the configuration check refuses it, and a running node keeps its
    configuration, its connection and its flow."""
    tag = unique("qg")
    path = tmp_path / "node.yaml"

    def write(queue_group: str | None) -> None:
        rule = f"{{from: plant, topic: '{tag}/#'"
        rule += f", queue_group: '{queue_group}'}}" if queue_group else "}"
        path.write_text(
            f"node: {{id: solo, listen: '127.0.0.1:0', data_dir: '{tmp_path / 'data'}'}}\n"
            f"brokers:\n  plant: {{kind: mqtt, url: '{mosquitto.url}'}}\n"
            f"  bus: {{kind: nats, url: '{nats_server.url}'}}\n"
            f"ingress: [{rule}]\n"
            f"egress: [{{to: bus, topic: '{tag}/#', target: 'out.{tag}.{{id}}'}}]\n"
        )

    def event(event_id: str) -> list[tuple[str, bytes]]:
        body = {"specversion": "1.0", "id": event_id, "source": "/qg", "type": "t"}
        return [(f"{tag}/in", orjson.dumps(body))]

    write(None)
    client = MqttClient(mosquitto.url)
    try:
        async with nats_collect(nats_server.url, f"out.{tag}.>") as received:
            node = Node(load_config(path), source=str(path))
            async with node.serve():
                await node.ready()
                await asyncio.to_thread(client.publish_many, event("before"))
                await wait_for(lambda: "before" in received, 10, "the flow before")

                write("a+b")
                with pytest.raises(ConfigErrors) as refused:
                    await node.reload_from_source()
                assert "ingress[0].queue_group" in str(refused.value)
                await asyncio.to_thread(client.publish_many, event("after"))
                await wait_for(lambda: "after" in received, 10, "the flow after")
                assert node.broker_connected("plant")
                assert node.metrics.get("mesh_task_restarts_total", task="bridge[plant]") == 0
    finally:
        client.client.loop_stop()
        client.client.disconnect()


async def test_an_oversize_event_from_a_peer_is_dead_lettered_and_the_batch_goes_on(
    site: Site,
) -> None:
    """Events from a link meet limits.max_event_size as ingress events do."""
    node = site.node
    limit = node.config.limits.max_event_size

    def record(event_id: str, size: int) -> bytes:
        attrs = {"specversion": "1.0", "id": event_id, "source": "/peer", "type": "t"}
        return encode_record(Envelope(Event(attrs, b"x" * size), f"{site.tag}/x", PEER, 1))

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{node.port}/mesh", max_msg_size=0)
        await ws.send_str(frames.hello(PEER, "r", TOKEN))
        welcome = frames.parse_welcome((await ws.receive(timeout=10)).data, "solo")
        assert isinstance(welcome, frames.Welcome)
        batch = [record("small-1", 100), record("huge", limit + 1), record("small-2", 100)]
        await ws.send_bytes(encode_batch_frame(1, batch))
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                if orjson.loads(msg.data).get("type") == "ack":
                    break
        await wait_for(lambda: {"small-1", "small-2"} <= set(site.received), 10, "the others")
        assert "huge" not in site.received
        [entry] = await node.store.dead_letters()
        assert "exceeds the limit" in entry.reason and entry.place == f"link:{PEER}"
        assert PEER in node.sessions, "the link stays up"
        await ws.close()
