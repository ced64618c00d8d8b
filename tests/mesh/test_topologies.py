"""Interests propagate across any topology; every interested site gets each event exactly once.

For each topology every node subscribes to events addressed to it
(``in/to/<node>/#``) and to broadcasts (``in/all/#``). Every node then sends
one event to every other node and one broadcast. Exactly-once is checked at
the consumers' brokers, and the link counters prove the mechanism: a unicast
event crosses exactly the links of one shortest path, a broadcast exactly
N-1 links (each node receives it once), and nothing crosses a link with no
interest behind it (an event nobody wants never leaves its node).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mesh.meshnet import MeshNet, settle

TOPOLOGIES = {
    "line-4": (["a", "b", "c", "d"], [("b", "a"), ("c", "b"), ("d", "c")]),
    "star-5": (
        ["hub", "l1", "l2", "l3", "l4"],
        [("l1", "hub"), ("l2", "hub"), ("l3", "hub"), ("l4", "hub")],
    ),
    "ring-4": (["a", "b", "c", "d"], [("b", "a"), ("c", "b"), ("d", "c"), ("d", "a")]),
    "full-mesh-4": (
        ["a", "b", "c", "d"],
        [("b", "a"), ("c", "a"), ("d", "a"), ("c", "b"), ("d", "b"), ("d", "c")],
    ),
}


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
async def test_every_interested_site_gets_each_event_exactly_once(
    tmp_path: Path, topology: str
) -> None:
    names, edges = TOPOLOGIES[topology]
    interests = {n: [f"in/to/{n}/#", "in/all/#"] for n in names}
    async with MeshNet(tmp_path, names, edges, interests) as net:
        await net.wait_converged()

        # Unicast: every node to every other node.
        expected: dict[str, list[str]] = {n: [] for n in names}
        hops = 0
        for s in names:
            dist = net.distances(s)
            for k in names:
                if k != s:
                    eid = f"u-{s}-{k}"
                    await net.publish(s, f"in.to.{k}.x", eid)
                    expected[k].append(eid)
                    hops += dist[k]
        # Nobody is interested in this one: it must not cross any link.
        for s in names:
            await net.publish(s, "in.nobody.x", f"orphan-{s}")
        await net.flush()
        await settle(net, sum(len(v) for v in expected.values()))
        got = net.received()
        for n in names:
            assert sorted(got[n]) == sorted(expected[n]), n
        assert net.link_sends() == hops, "unicast events took more than one shortest path"
        unrouted = sum(net.node(n).metrics.total("mesh_unrouted_events_total") for n in names)
        assert unrouted == len(names)

        # Broadcast: every node receives each broadcast once, over N-1 link crossings.
        before = net.link_sends()
        for s in names:
            await net.publish(s, f"in.all.{s}", f"b-{s}")
            for n in names:
                expected[n].append(f"b-{s}")
        await net.flush()
        await settle(net, sum(len(v) for v in expected.values()))
        got = net.received()
        for n in names:
            assert sorted(got[n]) == sorted(expected[n]), n
        assert net.link_sends() - before == len(names) * (len(names) - 1)
        assert net.duplicates() == 0  # exactly once by construction, not by dedup
        for n in names:
            assert net.node(n).table.looped == 0, f"{n} received its own interest back"
