"""A store error during broker ingress or egress stays local (issue 11).

The store is outside: a disk can fail, a database can be locked by another
process. The error is injected into the real store of a real node (one
operation fails, as SQLite would fail it) while Mosquitto, nats-server and
HTTP clients are real. The node stays up, what was not acknowledged comes
again, HTTP clients are answered at once (503, never a hang), the fault is
counted as a restart of the task it hit, and the other flows go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mesh.core.errors import StoreError
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, nats_collect, node_config, unique, wait_for


def fail_next(node: Node, op: str, times: int = 1) -> list[int]:
    """Make the store's ``op`` raise StoreError for its next ``times`` calls."""
    store: Any = node.store
    real: Callable[..., Awaitable[Any]] = getattr(store, op)
    failed = [0]

    async def failing(*args: Any, **kw: Any) -> Any:
        if failed[0] < times:
            failed[0] += 1
            raise StoreError(f"injected: {op} failed")
        return await real(*args, **kw)

    setattr(store, op, failing)
    return failed


def restarts(node: Node, task: str) -> int:
    return node.metrics.get("mesh_task_restarts_total", task=task)


@pytest.fixture
def tag() -> str:
    return unique("sf")


async def test_a_store_error_at_broker_ingress_is_contained(
    tmp_path: Path,
    mosquitto: Mosquitto,
    nats_server: NatsServer,
    tag: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with nats_collect(
        nats_server.url, f"out.{tag}.>", key=lambda m: m.data.decode()
    ) as received:
        cfg = node_config(
            tmp_path,
            "solo",
            brokers={
                "plant": {"kind": "mqtt", "url": mosquitto.url},
                "web": {"kind": "http"},
                "bus": {"kind": "nats", "url": nats_server.url},
            },
            ingress=[
                {"from": "plant", "topic": f"{tag}/m/#"},
                {"from": "web", "topic": f"{tag}/h/#"},
            ],
            egress=[
                {"to": "bus", "topic": f"{tag}/#", "target": f"out.{tag}.{{id}}", "mode": "data"}
            ],
        )
        client = MqttClient(mosquitto.url)
        try:
            timeout = aiohttp.ClientTimeout(total=10)  # a hung answer fails, not hangs
            async with Node(cfg).serve() as node, aiohttp.ClientSession(timeout=timeout) as http:
                await node.ready()
                url = f"http://127.0.0.1:{node.port}/events/{tag}/h/x"
                headers = {
                    "ce-specversion": "1.0",
                    "ce-source": "/sf",
                    "ce-type": "t",
                    "content-type": "text/plain",
                }

                # MQTT: the batch is not acknowledged, the connection restarts once,
                # Mosquitto redelivers, the event arrives.
                failed = fail_next(node, "append")
                await asyncio.to_thread(client.publish_many, [(f"{tag}/m/1", b"mqtt-1")])
                await wait_for(lambda: failed[0] == 1, 10, "the injected failure")
                await wait_for(lambda: "mqtt-1" in received, 20, "mqtt-1 after the reconnect")
                assert restarts(node, "bridge[plant]") == 1
                logged = [r for r in caplog.records if "injected: append failed" in r.getMessage()]
                assert len(logged) == 1, [r.getMessage() for r in logged]

                # HTTP: a request hit by the failure is refused at once, then accepted.
                failed = fail_next(node, "append")
                async with http.post(url, data=b"h", headers={**headers, "ce-id": "http-1"}) as r:
                    assert r.status == 503 and "Retry-After" in r.headers
                assert failed[0] == 1
                await node.ready(20)
                async with http.post(url, data=b"h", headers={**headers, "ce-id": "http-1"}) as r:
                    assert r.status == 202
                await wait_for(lambda: "h" in received, 10, "http-1 at NATS")

                # The other flows went on; the node serves.
                await asyncio.to_thread(client.publish_many, [(f"{tag}/m/2", b"mqtt-2")])
                await wait_for(lambda: "mqtt-2" in received, 10, "mqtt-2")
                await asyncio.sleep(0.3)
                assert received.count("mqtt-1") == 1 and received.count("mqtt-2") == 1
        finally:
            client.client.loop_stop()
            client.client.disconnect()


async def test_a_store_error_at_egress_is_contained(
    tmp_path: Path, nats_server: NatsServer, tag: str
) -> None:
    """A failed acknowledgement is retried; one that keeps failing restarts the
    egress worker, which delivers everything (at least once: it may repeat a batch)."""
    async with nats_collect(nats_server.url, f"out.{tag}.>") as received:
        cfg = node_config(
            tmp_path,
            "solo",
            brokers={"web": {"kind": "http"}, "bus": {"kind": "nats", "url": nats_server.url}},
            ingress=[{"from": "web", "topic": f"{tag}/#"}],
            egress=[{"to": "bus", "topic": f"{tag}/#", "target": f"out.{tag}.{{id}}"}],
        )
        async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
            await node.ready()

            async def post(event_id: str) -> None:
                headers = {
                    "ce-specversion": "1.0",
                    "ce-id": event_id,
                    "ce-source": "/sf",
                    "ce-type": "t",
                    "content-type": "text/plain",
                }
                url = f"http://127.0.0.1:{node.port}/events/{tag}/x"
                async with http.post(url, data=b"x", headers=headers) as r:
                    assert r.status == 202

            worker = node.egress_workers()[0].rule.name
            # A failed acknowledgement is retried: no restart, nothing repeated.
            failed = fail_next(node, "delete", 1)
            await post("ack-1")
            await wait_for(lambda: failed[0] == 1, 10, "the failed acknowledgement")
            await wait_for(lambda: "ack-1" in received, 10, "ack-1 delivered")
            await post("ack-2")
            await wait_for(lambda: "ack-2" in received, 10, "ack-2 delivered")
            assert restarts(node, worker) == 0
            box = node.egress_workers()[0].outbox
            await wait_for(lambda: box.depth == 0, 10, "both acknowledged")
            assert restarts(node, worker) == 0

            # One that keeps failing restarts the worker, which publishes again.
            failed = fail_next(node, "delete", 10)
            await post("ack-3")
            await wait_for(lambda: restarts(node, worker) >= 1, 20, "the worker restarted")
            failed[0] = 10  # the store recovers
            await post("after")
            await wait_for(lambda: "after" in received, 10, "the next event")
            await asyncio.sleep(0.5)
            assert received.count("ack-1") == 1 and received.count("ack-2") == 1
            assert received.count("ack-3") >= 1  # at least once: its ack failed
            assert await node.store.box_stats(box.box) == (0, 0)
