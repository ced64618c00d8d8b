"""`mesh reload`: a subscription added at the far end of a line starts receiving within
2 s; one removed stops traffic over every link; unaffected links stay up."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import wait_for
from tests.mesh.meshnet import MeshNet


async def mesh_reload(port: int) -> str:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh.cli", "reload", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_reload_adds_and_removes_a_subscription_across_a_line_of_4(
    tmp_path: Path,
) -> None:
    names = ["a", "b", "c", "d"]
    edges = [("b", "a"), ("c", "b"), ("d", "c")]
    async with MeshNet(tmp_path, names, edges, {}) as net:
        await net.wait_converged()
        sessions = {n: dict(net.node(n).sessions) for n in names}
        stop = asyncio.Event()
        sent = 0

        async def produce() -> None:
            nonlocal sent
            while not stop.is_set():
                await net.publish("a", "in.news.x", f"n{sent}")
                sent += 1
                await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.3)
        assert net.link_sends() == 0  # nobody wants news yet: nothing leaves a

        net.set_interests("d", ["in/news/#"])
        started = time.monotonic()
        out = await mesh_reload(net.node("d").port)
        assert "reloaded" in out
        received = net.members["d"].received
        await wait_for(lambda: received, 2.0, "the first event at d")
        assert time.monotonic() - started < 2.0
        # The links that were up stayed up: the same sessions, not new ones.
        for n in names:
            assert net.node(n).sessions == sessions[n], n

        net.set_interests("d", [])
        await mesh_reload(net.node("d").port)
        await wait_for(
            lambda: not any(r.origin == "d" for r in net.node("a").table.routes()),
            5.0,
            "the withdrawal to reach a",
        )
        await asyncio.sleep(0.3)  # let in-flight events land
        before = net.link_sends()
        count = len(received)
        await asyncio.sleep(1.0)
        stop.set()
        await producer
        assert net.link_sends() == before, "events still cross links after the removal"
        assert len(received) == count
        assert sent > 100
