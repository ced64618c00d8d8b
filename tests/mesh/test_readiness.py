"""``/readyz`` tells the truth: a broker down or a peer not linked makes the node not ready.

The first part of the operations issue's acceptance 1, with a real Mosquitto:
stopping the node's broker turns ``/readyz`` 503 with ``broker:<name>`` in the
reasons within 10 s, and ``mesh_broker_up`` 0; both recover once the broker is
back. ``/healthz`` stays 200 throughout (the process serves).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mesh.runtime.node import Node
from mesh.testing import Mosquitto, free_port
from tests.helpers import node_config

pytestmark = pytest.mark.timeout(60)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def test_a_stopped_broker_makes_the_node_not_ready_until_it_is_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"plant": {"kind": "mqtt", "url": mosquitto.url}},
        ingress=[{"from": "plant", "topic": "ready/#"}],
    )
    async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{node.port}"
        await node.ready()
        status, body = await get(http, f"{base}/readyz")
        assert (status, body["ready"], body["reasons"]) == (200, True, [])
        assert node.metrics.snapshot()["mesh_broker_up"][0]["value"] == 1.0

        mosquitto.stop()
        answers: list[tuple[int, Any]] = []

        async def not_ready() -> bool:
            answers.append(await get(http, f"{base}/readyz"))
            return answers[-1][0] == 503

        await _until(not_ready, 10, "/readyz to answer 503")
        body = answers[-1][1]
        assert body["ready"] is False
        [reason] = [r for r in body["reasons"] if r["component"] == "broker:plant"]
        assert reason["reason"], reason
        assert node.metrics.snapshot()["mesh_broker_up"][0]["value"] == 0.0
        assert (await get(http, f"{base}/healthz"))[0] == 200
        status, full = await get(http, f"{base}/api/status")
        assert status == 200 and full["brokers"]["plant"]["up"] is False
        async with http.get(f"{base}/metrics") as r:
            assert 'mesh_broker_up{broker="plant"} 0' in await r.text()

        mosquitto.start()  # the same port

        async def ready() -> bool:
            return (await get(http, f"{base}/readyz"))[0] == 200

        await _until(ready, 30, "/readyz to answer 200 again")
        assert node.metrics.snapshot()["mesh_broker_up"][0]["value"] == 1.0


async def test_a_configured_peer_not_linked_is_a_reason(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    cfg = node_config(
        tmp_path,
        "solo",
        peers=[{"id": "far", "url": f"ws://127.0.0.1:{port}/mesh", "token": "t"}],
    )
    async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
        status, body = await get(http, f"http://127.0.0.1:{node.port}/readyz")
        assert status == 503
        [reason] = body["reasons"]
        assert reason["component"] == "peer:far" and reason["reason"], reason


async def _until(cond: Any, timeout: float, what: str) -> None:
    """Poll an async condition (tests.helpers.wait_for takes a plain one)."""
    try:
        async with asyncio.timeout(timeout):
            while not await cond():  # noqa: ASYNC110 - polling an endpoint
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
