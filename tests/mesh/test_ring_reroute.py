"""A ring of 4 reroutes around a cut link, and restoring it creates no duplicates."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import wait_for
from tests.mesh.meshnet import MeshNet

N = 2000


async def test_cut_link_reroutes_the_other_way_and_restoring_it_creates_no_duplicates(
    tmp_path: Path,
) -> None:
    names = ["a", "b", "c", "d"]
    edges = [("b", "a"), ("c", "b"), ("d", "c"), ("d", "a")]
    interests = {"b": ["in/to/b/#"]}
    async with MeshNet(tmp_path, names, edges, interests, proxied=[("b", "a")]) as net:
        await net.wait_converged()
        a = net.node("a")
        proxy = net.proxies[("b", "a")]
        assert [r.next_hop for r in a.table.routes() if r.origin == "b"] == ["b"]

        for i in range(N):
            await net.publish("a", "in.to.b.x", f"e{i}")
            if i == N // 3:
                await net.flush()
                proxy.reset()  # the a-b link is cut mid-stream
                await wait_for(lambda: "b" not in a.sessions, what="a to notice the cut")
                await wait_for(
                    lambda: [r.next_hop for r in a.table.routes() if r.origin == "b"] == ["d"],
                    what="reroute via d",
                )
            if i == 2 * N // 3:
                await net.flush()
                await wait_for(
                    lambda: a.metrics.get("mesh_link_sent_events_total", peer="d") > 0,
                    what="traffic to flow the other way",
                )
                proxy.restore()
                await wait_for(lambda: "b" in a.sessions, what="the link to come back")
            if i % 100 == 0:
                await asyncio.sleep(0.01)
        await net.flush()

        got = net.members["b"].received
        await wait_for(lambda: len(got) >= N, 30, f"{N} events at b (have {len(got)})")
        await asyncio.sleep(0.5)
        assert len(got) == N, "duplicates were delivered"
        assert sorted(got) == sorted(f"e{i}" for i in range(N))
        assert a.metrics.get("mesh_link_sent_events_total", peer="d") > 0
        assert [r.next_hop for r in a.table.routes() if r.origin == "b"] == ["b"]
        for n in names:
            node = net.node(n)
            assert node.table.looped == 0, f"{n} received its own interest back"
            # No hop dropped an event in transit while the routes changed.
            assert node.metrics.total("mesh_unrouted_events_total") == 0, n
            assert node.metrics.total("mesh_dead_letters_total") == 0, n
