"""A full disk is backpressure, not a failure (issue 11, acceptance 3).

Node ``b``'s data directory is a small tmpfs. Node ``a`` ingests from its
NATS and forwards to ``b`` over a peer link. While ``b``'s disk is full it
reports ``mesh_store_full`` 1, stops acknowledging (``a`` keeps the events in
its outbox), and keeps the link up instead of redialling; once space is
freed everything drains, each event exactly once. The same for a sending
node whose disk is full: its HTTP ingress answers 503 with Retry-After, and
once there is room the events flow, each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mesh.config import MeshConfig
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, nats_collect, node_config, unique, wait_for
from tests.mesh.meshnet import MeshNet, settle


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the disk-full test mounts a tmpfs and must run as root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = path / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return ballast


def receiver(tmp_path: Path, nats_server: NatsServer, tag: str) -> MeshConfig:
    """Node b: accepts a (token t) and publishes ``tag/#`` to NATS as out.<tag>.<id>."""
    return node_config(
        tmp_path,
        "b",
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        accept=[{"id": "a", "token": "t"}],
        egress=[{"to": "bus", "topic": f"{tag}/#", "target": f"out.{tag}.{{id}}"}],
    )


def gauge(net: MeshNet, name: str, metric: str) -> float:
    read = net.node(name).metrics.gauges[metric]
    return sum(read().values())


async def test_a_full_disk_at_the_receiving_node_is_backpressure(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "b", 64):
        interests = {"b": ["in/to/b/#"]}
        async with MeshNet(tmp_path, ["b", "a"], [("a", "b")], interests) as net:
            await net.wait_converged()
            for i in range(20):
                await net.publish("a", "in.to.b.x", f"before-{i}")
            await net.flush()
            await settle(net, 20)

            ballast = fill(tmp_path / "b")
            sessions = net.node("b").metrics.get("mesh_link_sessions_total", peer="a")
            # SQLite reuses the pages of delivered events, so how many more fit
            # depends on the machine: publish until b's store says it is full.
            sent: list[str] = []
            for round_ in range(40):
                for i in range(50):
                    sent.append(f"fill-{round_}-{i}")
                    await net.publish("a", "in.to.b.x", sent[-1])
                await net.flush()
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: gauge(net, "b", "mesh_store_full") == 1, 1, "")
                    break
            assert gauge(net, "b", "mesh_store_full") == 1, "b never reported a full store"
            held = [f"full-{i}" for i in range(300)]
            for name in held:
                await net.publish("a", "in.to.b.x", name)
            await net.flush()
            # Ten seconds of a full disk: the link stays up, no redial storm.
            for _ in range(20):
                await asyncio.sleep(0.5)
                assert "a" in net.node("b").sessions
            again = net.node("b").metrics.get("mesh_link_sessions_total", peer="a")
            assert again - sessions <= 1, again - sessions
            early = set(net.received()["b"]) & set(held)
            assert not early, f"{len(early)} events passed a full store"

            ballast.unlink()
            expected = [f"before-{i}" for i in range(20)] + sent + held
            await settle(net, len(expected), timeout=60)
            got = net.received()["b"]
            assert sorted(got) == sorted(expected)
            assert len(got) == len(set(got)), "an event arrived twice"
            await wait_for(
                lambda: gauge(net, "b", "mesh_store_full") == 0, 20, "b to leave the full state"
            )


async def test_a_full_disk_at_the_sending_node_is_backpressure(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """HTTP ingress at a full node answers 503 with Retry-After; once there is
    room the same events are accepted and arrive at the other node once."""
    tag = unique("full")
    async with nats_collect(nats_server.url, f"out.{tag}.>") as received:
        b_cfg = receiver(tmp_path, nats_server, tag)
        with tmpfs(tmp_path / "a", 32):
            async with Node(b_cfg).serve() as b:
                await b.ready()
                a_cfg = node_config(
                    tmp_path,
                    "a",
                    brokers={"web": {"kind": "http"}},
                    ingress=[{"from": "web", "topic": f"{tag}/#"}],
                    peers=[{"id": "b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "t"}],
                )
                async with Node(a_cfg).serve() as a, aiohttp.ClientSession() as http:
                    await a.ready()
                    await wait_for(lambda: a.table.routes(), 10, "b's interest at a")
                    url = f"http://127.0.0.1:{a.port}/events/{tag}/x"

                    async def post(i: int) -> aiohttp.ClientResponse:
                        headers = {
                            "ce-specversion": "1.0",
                            "ce-id": f"e{i}",
                            "ce-source": "/full",
                            "ce-type": "t",
                            "content-type": "application/json",
                        }
                        async with http.post(url, data=b"{}", headers=headers) as r:
                            return r

                    assert (await post(0)).status == 202
                    ballast = fill(tmp_path / "a")
                    sessions = a.metrics.get("mesh_link_sessions_total", peer="b")
                    # SQLite reuses free pages, so how many more fit depends on the
                    # machine: post until the first refusal, then 20 more.
                    refused: list[int] = []
                    n = 1
                    while len(refused) < 21:
                        assert n < 3000, "nothing was refused on a full disk"
                        r = await post(n)
                        if r.status == 503:
                            assert r.headers.get("Retry-After"), r.headers
                            refused.append(n)
                        else:
                            assert r.status == 202, r.status
                            assert not refused, f"e{n} accepted after a refusal on a full disk"
                        n += 1
                    assert a.metrics.gauges["mesh_store_full"]()[()] == 1
                    assert "b" in a.sessions, "the link stays up"
                    ballast.unlink()
                    for i in refused:  # what a client does after a 503
                        await wait_for_status(post, i)
                    await wait_for(lambda: len(received) >= n, 30, "every event at b's NATS")
                    await asyncio.sleep(0.3)
                    assert sorted(received) == sorted(f"e{i}" for i in range(n))
                    assert a.metrics.get("mesh_link_sessions_total", peer="b") == sessions
                    assert a.metrics.gauges["mesh_store_full"]()[()] == 0


async def wait_for_status(post: Any, i: int, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await post(i)).status != 202:
        assert asyncio.get_running_loop().time() < deadline, f"e{i} still refused"
        await asyncio.sleep(0.2)


async def test_a_full_disk_at_a_node_taking_from_mqtt_holds_the_messages_at_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    """MQTT ingress at a full node stops acknowledging: Mosquitto keeps the
    messages, the connection and the link stay up, and once there is room every
    event reaches the other node once."""
    tag = unique("fullmq")
    b_cfg = receiver(tmp_path, nats_server, tag)
    client = MqttClient(mosquitto.url)

    def events(prefix: str, n: int) -> list[tuple[str, bytes]]:
        return [
            (
                f"{tag}/in",
                orjson.dumps(
                    {"specversion": "1.0", "id": f"{prefix}{i}", "source": "/mq", "type": "t"}
                ),
            )
            for i in range(n)
        ]

    async with nats_collect(nats_server.url, f"out.{tag}.>") as received:
        with tmpfs(tmp_path / "a", 32):
            async with Node(b_cfg).serve() as b:
                await b.ready()
                a_cfg = node_config(
                    tmp_path,
                    "a",
                    brokers={"plant": {"kind": "mqtt", "url": mosquitto.url}},
                    ingress=[{"from": "plant", "topic": f"{tag}/#"}],
                    peers=[{"id": "b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "t"}],
                )
                async with Node(a_cfg).serve() as a:
                    await a.ready()
                    await wait_for(lambda: a.table.routes(), 10, "b's interest at a")
                    ballast = fill(tmp_path / "a")
                    sessions = a.metrics.get("mesh_link_sessions_total", peer="b")
                    sent: list[tuple[str, bytes]] = []
                    for round_ in range(40):
                        batch = events(f"f{round_}-", 50)
                        sent += batch
                        await asyncio.to_thread(client.publish_many, batch)
                        with contextlib.suppress(AssertionError):
                            await wait_for(lambda: a.store.full, 1, "")
                            break
                    assert a.store.full, "a never reported a full store"
                    held = events("held-", 100)
                    await asyncio.to_thread(client.publish_many, held)
                    await asyncio.sleep(3)
                    early = [r for r in received if r.startswith("held-")]
                    assert not early, f"{len(early)} events passed a full store"
                    assert a.broker_connected("plant") and "b" in a.sessions
                    assert a.metrics.get("mesh_task_restarts_total", task="bridge[plant]") == 0

                    ballast.unlink()
                    expected = sorted(orjson.loads(p)["id"] for _t, p in sent + held)
                    await wait_for(lambda: len(received) >= len(expected), 60, "every event")
                    await asyncio.sleep(0.3)
                    assert sorted(received) == expected
                    assert a.metrics.get("mesh_link_sessions_total", peer="b") == sessions
                    await wait_for(lambda: not a.store.full, 20, "a to leave the full state")
    client.client.loop_stop()
    client.client.disconnect()
