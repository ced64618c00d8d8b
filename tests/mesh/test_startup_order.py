"""An event a starting node accepted is never lost because its own subscriptions were not in yet.

The node used to start its brokers before it installed its egress
subscriptions in the routing table; an event taken in between (HTTP ingress
answers 202 once the brokers are up) found nobody interested and was dropped
as unrouted. Here the set-up of the egress outboxes is slowed down, as a slow
disk would, and events are posted from the first moment the node listens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridges.memory import broker
from mesh.runtime.node import Node
from mesh.testing import free_port
from tests.helpers import node_config, unique, wait_for


async def test_every_event_accepted_during_start_up_is_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Node._carry_outboxes

    async def slow_carry(self: Node, wanted: Any) -> None:
        await asyncio.sleep(0.5)  # a slow disk while the egress outboxes are set up
        await slow(self, wanted)

    monkeypatch.setattr(Node, "_carry_outboxes", slow_carry)
    name = unique("bus")
    port = free_port()
    cfg = node_config(
        tmp_path,
        "solo",
        node={"id": "solo", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "d")},
        brokers={"web": {"kind": "http"}, "bus": {"kind": "memory", "name": name}},
        ingress=[{"from": "web", "topic": "in/#"}],
        egress=[{"to": "bus", "topic": "in/#", "target": "out/{id}"}],
    )
    accepted: list[str] = []

    async def post_until_stopped(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            i = 0
            while not stop.is_set():
                i += 1
                headers = {
                    "ce-specversion": "1.0",
                    "ce-id": f"e{i}",
                    "ce-source": "/t",
                    "ce-type": "t",
                    "content-type": "text/plain",
                }
                try:
                    async with http.post(
                        f"http://127.0.0.1:{port}/events/in/x", data=b"1", headers=headers
                    ) as r:
                        if r.status == 202:
                            accepted.append(f"e{i}")
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.01)

    stop = asyncio.Event()
    poster = asyncio.create_task(post_until_stopped(stop))
    try:
        async with Node(cfg).serve() as node:
            await wait_for(lambda: len(accepted) >= 20, what="events accepted")
            stop.set()
            await poster
            bus = broker(name)
            want = {f"out/{e}" for e in accepted}
            await wait_for(
                lambda: want <= {m.topic for m in bus.published}, what="every accepted event"
            )
            assert node.metrics.total("mesh_unrouted_events_total") == 0
    finally:
        stop.set()
        await poster
