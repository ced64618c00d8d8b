"""From a routing decision to durable outbox records.

:meth:`Router.route` matches each envelope against the routing table, drops
local duplicates by (``source``, ``id``), and appends one record per local
egress and one per next hop (carrying the destinations that hop is
responsible for) to the outboxes in a single group commit. When it returns,
every event is durable in this node: the caller may acknowledge upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mesh.dedup import Dedup
from mesh.envelope import Envelope, encode_record
from mesh.metrics import Metrics
from mesh.outbox import Outbox, Outboxes
from mesh.routing import RoutingTable

__all__ = ["MAX_HOPS", "Router"]

log = logging.getLogger(__name__)
MAX_HOPS = 16


class Router:
    def __init__(
        self,
        node_id: str,
        table: RoutingTable,
        outboxes: Outboxes,
        metrics: Metrics,
        dedup: Dedup,
    ) -> None:
        self.node_id = node_id
        self.table = table
        self.outboxes = outboxes
        self.metrics = metrics
        self.dedup = dedup
        self.egress_boxes: dict[int, Outbox] = {}

    async def peer_box(self, peer: str) -> Outbox:
        return await self.outboxes.get(f"peer:{peer}")

    async def route(self, envs: Sequence[Envelope], from_peer: str | None = None) -> int:
        """Make ``envs`` durable in their outboxes; return how many were routed anywhere."""
        items: list[tuple[Outbox, bytes]] = []
        added: list[tuple[str, str]] = []
        routed = 0
        for env in envs:
            levels = tuple(env.topic.split("/"))
            d = self.table.match(levels, env.event.attrs, env.dests)
            duplicate = False
            if d.local:
                key = env.event.key
                if self.dedup.add(key):
                    added.append(key)
                    rec = encode_record(Envelope(env.event, env.topic, env.origin, env.hops))
                    for idx in d.local:
                        box = self.egress_boxes.get(idx)
                        if box is not None:
                            items.append((box, rec))
                else:
                    self.metrics.inc("mesh_link_duplicates_total", peer=from_peer or "local")
                    duplicate = True
                    d.local = []
            remote = 0
            for hop, dests in d.remote.items():
                if hop == from_peer:
                    continue
                if env.hops + 1 > MAX_HOPS:
                    self.metrics.inc("mesh_dead_letters_total", reason="hop limit")
                    log.warning("event %s dropped: hop limit %d reached", env.event.id, MAX_HOPS)
                    continue
                fwd = Envelope(env.event, env.topic, env.origin, env.hops + 1, frozenset(dests))
                items.append((await self.peer_box(hop), encode_record(fwd)))
                remote += 1
            if d.local or remote:
                routed += 1
            elif not duplicate:
                self.metrics.inc("mesh_unrouted_events_total")
        try:
            await self.outboxes.put(items)
        except BaseException:
            for key in added:
                self.dedup.discard(key)
            raise
        return routed
