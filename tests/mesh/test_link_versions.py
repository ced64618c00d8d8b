"""Links survive upgrades: a node speaking only the oldest link protocol joins a current mesh.

``old`` speaks only version 1 of the link protocol; ``new`` and ``newer``
speak every version this build knows. ``old`` dials ``new`` and ``newer``
dials ``old``, so the old node is once the dialer and once the acceptor.
Both of its links must come up on version 1, the link between current
nodes on the newest, and every event must cross the mixed mesh exactly once.
"""

from __future__ import annotations

from pathlib import Path

from mesh.core.frames import LINK_VERSIONS
from tests.mesh.meshnet import MeshNet, settle

NAMES = ["new", "old", "newer"]
EDGES = [("old", "new"), ("newer", "old"), ("newer", "new")]


async def test_a_node_speaking_only_the_oldest_version_links_to_current_ones(
    tmp_path: Path,
) -> None:
    assert LINK_VERSIONS[0] == 1 < LINK_VERSIONS[1], "this test needs a range to negotiate"
    interests = {n: [f"in/to/{n}/#"] for n in NAMES}
    oldest = (LINK_VERSIONS[0], LINK_VERSIONS[0])
    async with MeshNet(
        tmp_path, NAMES, EDGES, interests, node_options={"old": {"link_versions": oldest}}
    ) as net:
        await net.wait_converged()
        old, new, newer = net.node("old"), net.node("new"), net.node("newer")
        assert {p: s.version for p, s in old.sessions.items()} == {"new": 1, "newer": 1}
        assert new.sessions["old"].version == 1
        assert newer.sessions["old"].version == 1
        assert new.sessions["newer"].version == LINK_VERSIONS[1]
        assert newer.sessions["new"].version == LINK_VERSIONS[1]

        expected: dict[str, list[str]] = {n: [] for n in NAMES}
        for s in NAMES:
            for k in NAMES:
                if k != s:
                    for i in range(20):
                        eid = f"{s}-{k}-{i}"
                        await net.publish(s, f"in.to.{k}.x", eid)
                        expected[k].append(eid)
        await net.flush()
        await settle(net, sum(len(v) for v in expected.values()))
        got = net.received()
        for n in NAMES:
            assert sorted(got[n]) == sorted(expected[n]), n
        assert net.duplicates() == 0
        for node in (old, new, newer):
            assert node.metrics.total("mesh_link_protocol_errors_total") == 0
