"""Operating the mesh, with real brokers and nodes: metrics that count what happened,
canaries that find a stuck peer, and a trace context that crosses three nodes.

Acceptance 1 (second half), 2 and 3 of the operations issue; the broker-down
half of 1 is tests/mesh/test_readiness.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mesh.core.codec import Mode, encode_nats
from mesh.core.event import Event
from mesh.runtime.metrics import HELP
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer, free_port
from tests.helpers import MqttClient, nats_collect, node_config, unique, wait_for

pytestmark = pytest.mark.timeout(90)
TOKEN = "ops-token"


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    """One sample's value by its full name (``x_total``, ``x_count``); 0 when absent."""
    for fam in fams.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_metrics_parse_and_count_what_was_sent_delivered_and_dead_lettered(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    tag = unique()
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        ingress=[{"from": "bus", "topic": f"{tag}.in.>"}],
        egress=[
            {"to": "bus", "topic": f"{tag}/in/#", "target": f"{tag}.out.{{id}}"},
            {"name": "audit", "to": "bus", "topic": f"{tag}/in/a", "target": f"{tag}.audit"},
        ],
    )
    async with (
        Node(cfg).serve() as node,
        nats_collect(nats_server.url, f"{tag}.out.>") as out,
        nats_collect(nats_server.url, f"{tag}.audit") as audit,
        aiohttp.ClientSession() as http,
    ):
        await node.ready()
        nc = await nats.connect(nats_server.url)
        for i in range(20):
            ev = Event({"specversion": "1.0", "id": f"e{i}", "source": "/t", "type": "t"}, b"{}")
            payload, headers = encode_nats(ev, Mode.BINARY)
            await nc.publish(f"{tag}.in.{'a' if i < 5 else 'b'}", payload, headers=headers)
        for _ in range(3):  # binary mode without its required attributes: invalid
            await nc.publish(f"{tag}.in.a", b"x", headers={"ce-specversion": "1.0"})
        await nc.flush()
        await wait_for(lambda: len(out) == 20 and len(audit) == 5, what="deliveries")
        await nc.close()
        await asyncio.sleep(0.3)  # the acks of the last batch

        async with http.get(f"http://127.0.0.1:{node.port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
        fams = families(text)  # prometheus_client's own parser takes it
        # Every family has a real HELP, not its name.
        for name, fam in fams.items():
            assert fam.documentation and fam.documentation != name, name
        for name in ("mesh_broker_up", "mesh_link_canary_ok", "mesh_event_latency_seconds"):
            assert name in HELP
        assert sample(fams, "mesh_ingress_events_total", broker="bus") == 20
        assert sample(fams, "mesh_ingress_rejected_total", broker="bus", reason="invalid") == 3
        assert sample(fams, "mesh_dead_letters_total") == 3
        # Egress labels are operator names: the default <broker>:<index>, or the rule's name.
        assert sample(fams, "mesh_egress_events_total", egress="bus:0") == 20
        assert sample(fams, "mesh_egress_events_total", egress="audit") == 5
        assert sample(fams, "mesh_event_latency_seconds_count", egress="bus:0") == 20
        assert sample(fams, "mesh_event_latency_seconds_bucket", egress="bus:0", le="+Inf") == 20
        assert 0 < sample(fams, "mesh_event_latency_seconds_sum", egress="bus:0") < 20 * 10
        assert sample(fams, "mesh_broker_up", broker="bus") == 1
        outboxes = {s.labels["outbox"] for s in fams["mesh_outbox_depth"].samples}
        assert outboxes == {"egress:bus:0", "egress:audit"}
        assert sample(fams, "mesh_outbox_oldest_seconds", outbox="egress:bus:0") == 0
        assert "{" not in "".join(outboxes)  # no filter JSON in a label
        async with http.get(f"http://127.0.0.1:{node.port}/api/status") as r:
            status = await r.json()
        assert status["dead_letters"] == 3
        assert [e["name"] for e in status["egress"]] == ["bus:0", "audit"]
        assert [e["delivered"] for e in status["egress"]] == [20, 5]


# -- canaries (acceptance 2) ------------------------------------------------------------


@contextlib.asynccontextmanager
async def peer_process(
    tmp_path: Path, name: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        f"node: {{id: {name}, listen: '127.0.0.1:{port}', data_dir: '{tmp_path / name}', "
        "canary_interval: 0.5}\n"
        f"accept: [{{id: watcher, token: {TOKEN}}}]\n"
    )
    log = tmp_path / f"{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
            [sys.executable, "-m", "mesh.cli", "run", str(cfg)],
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_a_stopped_peer_is_shown_degraded_by_the_canary_and_healthy_again(
    tmp_path: Path,
) -> None:
    interval = 0.5
    async with peer_process(tmp_path, "stuck") as (proc, port):
        cfg = node_config(
            tmp_path,
            "watcher",
            node={
                "id": "watcher",
                "listen": "127.0.0.1:0",
                "data_dir": str(tmp_path / "watcher"),
                "canary_interval": interval,
            },
            peers=[{"id": "stuck", "url": f"ws://127.0.0.1:{port}/mesh", "token": TOKEN}],
        )
        async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{node.port}"
            await wait_for(
                lambda: "stuck" in node.sessions and node.sessions["stuck"].rtt is not None,
                what="a first canary answered",
            )
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()
            session = node.sessions["stuck"]
            assert session.canary_ok()
            async with http.get(f"{base}/metrics") as r:
                fams = families(await r.text())
            assert sample(fams, "mesh_link_canary_ok", peer="stuck") == 1
            assert sample(fams, "mesh_link_rtt_seconds_count", peer="stuck") >= 1

            os.kill(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            # Found by the canary within three intervals (and a poll's slack), while the
            # socket is still open: the WebSocket heartbeat has not noticed yet.
            await wait_for(
                lambda: not session.canary_ok(), timeout=3 * interval + 1.0, what="degraded"
            )
            assert time.monotonic() - stopped <= 3 * interval + 1.0
            assert node.sessions.get("stuck") is session  # the link is still up
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503
                body = await r.json()
            [reason] = [x for x in body["reasons"] if x["component"] == "peer:stuck"]
            assert "degraded" in reason["reason"]
            async with http.get(f"{base}/api/peers") as r:
                [peer] = (await r.json())["peers"]
            assert peer["state"] == "up" and peer["canary_ok"] is False
            async with http.get(f"{base}/metrics") as r:
                assert sample(families(await r.text()), "mesh_link_canary_ok", peer="stuck") == 0

            os.kill(proc.pid, signal.SIGCONT)

            def healthy() -> bool:
                s = node.sessions.get("stuck")
                return s is not None and s.canary_ok() and s.canary_silence() < interval * 2

            await wait_for(healthy, timeout=20, what="canaries answered again")
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{base}/metrics") as r:
                assert sample(families(await r.text()), "mesh_link_canary_ok", peer="stuck") == 1


# -- trace context across three nodes (acceptance 3) ------------------------------------


async def test_a_traceparent_from_mqtt_at_a_reaches_nats_and_a_webhook_at_c_in_one_trace(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    tag = unique()
    trace_id = os.urandom(16).hex()
    parent_span = os.urandom(8).hex()
    traceparent = f"00-{trace_id}-{parent_span}-01"
    hooked: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        hooked.append(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    def tracing(name: str) -> dict[str, Any]:
        return {"exporter": "file", "path": str(tmp_path / f"spans-{name}.jsonl")}

    c_cfg = node_config(
        tmp_path,
        "site-c",
        brokers={
            "bus": {"kind": "nats", "url": nats_server.url},
            "web": {"kind": "http"},
            "site": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5},
        },
        accept=[{"id": "site-b", "token": TOKEN}],
        egress=[
            {"to": "bus", "topic": f"{tag}/#", "target": f"{tag}.seen.{{id}}"},
            {"to": "web", "topic": f"{tag}/#", "target": f"http://127.0.0.1:{hook_port}/hook"},
            {"to": "site", "topic": f"{tag}/#", "target": f"out/{tag}", "mode": "structured"},
        ],
        tracing=tracing("site-c"),
    )
    try:
        async with (
            Node(c_cfg).serve() as c,
            nats_collect(nats_server.url, f"{tag}.seen.>", key=lambda m: m) as seen,
        ):
            b_cfg = node_config(
                tmp_path,
                "site-b",
                accept=[{"id": "site-a", "token": TOKEN}],
                peers=[{"id": "site-c", "url": f"ws://127.0.0.1:{c.port}/mesh", "token": TOKEN}],
                tracing=tracing("site-b"),
            )
            async with Node(b_cfg).serve() as b:
                a_cfg = node_config(
                    tmp_path,
                    "site-a",
                    brokers={"plant": {"kind": "mqtt", "url": mosquitto.url, "protocol": 5}},
                    peers=[
                        {"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": TOKEN}
                    ],
                    ingress=[{"from": "plant", "topic": f"{tag}/#"}],
                    tracing=tracing("site-a"),
                )
                async with Node(a_cfg).serve() as a:
                    await a.ready()
                    await wait_for(
                        lambda: any(r.origin == "site-c" for r in a.table.routes()),
                        what="site-a to learn site-c's interest",
                    )
                    consumer = MqttClient(mosquitto.url)
                    consumer.subscribe(f"out/{tag}")
                    device = MqttClient(mosquitto.url)
                    try:
                        info = device.publish(
                            f"{tag}/dev1",
                            orjson.dumps({"t": 21.5}),
                            user_properties=[("traceparent", traceparent)],
                        )
                        await asyncio.to_thread(info.wait_for_publish, 10)
                    finally:
                        device.close()
                    await wait_for(
                        lambda: seen and hooked and consumer.messages,
                        timeout=20,
                        what="the three deliveries",
                    )
                    consumer.close()
    finally:
        await runner.cleanup()

    # Two hops away, in each protocol's form: the W3C header, and the CloudEvents attribute.
    [msg] = seen
    assert msg.headers is not None
    assert msg.headers["traceparent"] == traceparent
    assert msg.headers["ce-traceparent"] == traceparent
    [headers] = hooked
    assert headers["traceparent"] == traceparent
    assert headers["ce-traceparent"] == traceparent

    # MQTT 5, structured mode: the W3C context as a user property beside the event.
    [out] = consumer.messages
    props = dict(out.properties.UserProperty)  # type: ignore[union-attr]
    assert props["traceparent"] == traceparent
    assert orjson.loads(out.payload)["traceparent"] == traceparent

    # The spans of the event, on all three nodes, in the publisher's trace.
    spans: dict[str, list[dict[str, Any]]] = {}
    for node in ("site-a", "site-b", "site-c"):
        path = tmp_path / f"spans-{node}.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        spans[node] = lines
    names = {n: sorted(s["name"].split(" ")[0] for s in v) for n, v in spans.items()}
    assert names == {
        "site-a": ["receive"],
        "site-b": ["process"],
        "site-c": ["process", "send", "send", "send"],
    }, names
    for node, items in spans.items():
        for s in items:
            assert s["context"]["trace_id"] == f"0x{trace_id}", (node, s)
            assert s["parent_id"] == f"0x{parent_span}", (node, s)
            assert s["resource"]["attributes"]["service.instance.id"] == node
            assert s["attributes"]["messaging.operation.type"] == s["name"].split(" ")[0]
    kinds = {s["attributes"]["messaging.system"] for s in spans["site-c"] if "send" in s["name"]}
    assert kinds == {"nats", "http", "mqtt"}


async def test_a_peer_whose_disk_is_full_is_shown_degraded_and_healthy_once_there_is_room(
    tmp_path: Path,
) -> None:
    from tests.mesh.test_disk_full import fill, tmpfs

    interval = 0.5
    with tmpfs(tmp_path / "full", 64) as data:
        full_cfg = node_config(
            tmp_path,
            "full",
            node={"id": "full", "listen": "127.0.0.1:0", "data_dir": str(data / "db")},
            accept=[{"id": "watcher", "token": TOKEN}],
        )
        async with Node(full_cfg).serve() as full:
            cfg = node_config(
                tmp_path,
                "watcher",
                node={
                    "id": "watcher",
                    "listen": "127.0.0.1:0",
                    "data_dir": str(tmp_path / "watcher"),
                    "canary_interval": interval,
                },
                peers=[{"id": "full", "url": f"ws://127.0.0.1:{full.port}/mesh", "token": TOKEN}],
            )
            async with Node(cfg).serve() as node:
                await wait_for(
                    lambda: "full" in node.sessions and node.sessions["full"].rtt is not None,
                    what="a first canary answered",
                )
                session = node.sessions["full"]
                ballast = await asyncio.to_thread(fill, data)
                filled = time.monotonic()
                await wait_for(
                    lambda: not session.canary_ok(), timeout=3 * interval + 1.5, what="degraded"
                )
                assert time.monotonic() - filled <= 3 * interval + 1.5
                assert node.sessions.get("full") is session  # the socket is fine
                assert full.store.full  # the peer knows why
                ballast.unlink()

                def healthy() -> bool:
                    s = node.sessions.get("full")
                    return s is not None and s.canary_ok() and s.canary_silence() < interval * 2

                await wait_for(healthy, timeout=15, what="canaries answered again")
                assert not full.store.full
