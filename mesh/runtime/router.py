"""From a routing decision to durable outbox records.

:meth:`Router.route` matches each envelope against the routing table and
appends one record per local egress and one per next hop (carrying the
destinations that hop is responsible for) to the outboxes in a single group
commit. Local delivery is de-duplicated by (``source``, ``id``) inside that
same commit (:meth:`mesh.runtime.store.Store.append`). Outbox bounds are applied
first: ``block`` raises :class:`~mesh.core.errors.Backpressure` before anything is
written, ``drop-oldest`` and ``reject-new`` dead-letter what does not fit.
When ``route`` returns, every event is durable in this node: the caller may
acknowledge upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from mesh.core.catalog import Catalog
from mesh.core.envelope import Envelope, encode_record
from mesh.core.errors import Backpressure, Overloaded
from mesh.core.routing import RoutingTable
from mesh.runtime.metrics import Metrics
from mesh.runtime.outbox import Outbox, Outboxes, OutboxPolicy, Unit
from mesh.runtime.store import DeadLetter
from mesh.runtime.tail import TailHub

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
    ) -> None:
        self.node_id = node_id
        self.table = table
        self.outboxes = outboxes
        self.metrics = metrics
        self.egress_boxes: dict[int, Outbox] = {}
        self.peer_policies: dict[str, OutboxPolicy] = {}
        self.tail = TailHub(metrics)  # live copies for /api/tail clients
        self.catalog: Catalog | None = None  # records what passes, once per batch

    async def peer_box(self, peer: str) -> Outbox:
        return await self.outboxes.get(f"peer:{peer}", self.peer_policies.get(peer))

    async def wait(self, exc: Overloaded) -> None:
        """After ``exc``, wait until trying again makes sense (at most its retry_after)."""
        if isinstance(exc, Backpressure):
            await self.outboxes.wait_for_room(exc)
        else:
            await asyncio.sleep(exc.retry_after)

    async def canary(self, peer: str, seq: int) -> None:
        """Commit a peer's canary to the store, behind the events routed before it.

        Raises :class:`~mesh.core.errors.Overloaded` while the store cannot commit
        (the disk is full): the canary then goes unanswered.
        """
        store = self.outboxes.store
        # A full disk is found even before an append fails (off the loop: leaving the
        # full state writes the reserve file back).
        await asyncio.to_thread(store.probe_room)
        await store.put(f"canary:{peer}", str(seq).encode())

    async def route(self, envs: Sequence[Envelope], from_peer: str | None = None) -> int:
        """Make ``envs`` durable in their outboxes; return how many were routed anywhere.

        Raises :class:`~mesh.core.errors.Overloaded` (nothing written, nothing
        counted) when an outbox with ``overflow: block`` or the store is full:
        the caller keeps the events and tries again later.
        """
        units: list[Unit] = []
        dead: list[DeadLetter] = []
        looped: Envelope | None = None  # the first event over the hop limit, for the log
        routed = 0
        unrouted = 0
        hop_boxes: dict[str, Outbox] = {}  # one lookup per next hop, not per event
        for env in envs:
            levels = tuple(env.topic.split("/"))
            d = self.table.match(levels, env.event.attrs, env.dests)
            remote: list[tuple[Outbox, bytes, Envelope | None]] = []
            for hop, dests in d.remote.items():
                # The next hop may be the peer the event came from: while routes
                # change, the upstream node can still have picked this one. Sending it
                # back follows the current table; the hop limit bounds a transient loop.
                fwd = Envelope(
                    env.event, env.topic, env.origin, env.hops + 1, frozenset(dests), env.t_in
                )
                if fwd.hops > MAX_HOPS:
                    looped = looped or fwd
                    dead.append(
                        DeadLetter(
                            f"hop limit {MAX_HOPS} reached",
                            f"peer:{hop}",
                            "event",
                            encode_record(fwd),
                        )
                    )
                    continue
                box = hop_boxes.get(hop)
                if box is None:
                    box = hop_boxes[hop] = await self.peer_box(hop)
                remote.append((box, encode_record(fwd), None))
            if d.local:
                local = Envelope(env.event, env.topic, env.origin, env.hops, None, env.t_in)
                rec = encode_record(local)
                boxes = [self.egress_boxes[i] for i in d.local if i in self.egress_boxes]
                units.append((env.event.key, [(box, rec, local) for box in boxes]))
            if remote:
                units.append((None, remote))
            if d.local or remote:
                routed += 1
            else:
                unrouted += 1
        rejected = await self._apply_bounds(units)
        duplicates = await self.outboxes.put(units)
        # Dead letters are written, and everything counted, once the batch is in,
        # not again on every retry after Overloaded.
        if dead or rejected:
            await self.outboxes.store.dead_letter(dead + rejected)
        if unrouted:
            self.metrics.inc("mesh_unrouted_events_total", unrouted)
        if dead:
            self.metrics.inc("mesh_dead_letters_total", len(dead), reason="hop limit")
            first = looped.event.attrs.get("id") if looped else None
            topic = looped.topic if looped else None
            log.warning(
                "%d events dead-lettered: hop limit %d reached (first: event %s on %s, to %s)",
                len(dead),
                MAX_HOPS,
                first,
                topic,
                dead[0].place,
                extra={"event_id": first, "topic": topic},
            )
        if rejected:
            self.metrics.inc("mesh_dead_letters_total", len(rejected), reason="reject-new")
            log.warning(
                "%d new events dead-lettered, outbox %s full (reject-new)",
                len(rejected),
                ", ".join(sorted({d.place for d in rejected})),
            )
        if duplicates:
            self.metrics.inc("mesh_link_duplicates_total", duplicates, peer=from_peer or "local")
        if self.tail.subscribers:  # the one check a node nobody tails pays
            self.tail.offer(envs)
        # After the commit: a batch retried after Overloaded is counted once.
        if self.catalog is not None and (dropped := self.catalog.record(envs)):
            self.metrics.inc("mesh_catalog_types_dropped_total", dropped)
        return routed

    async def _apply_bounds(self, units: list[Unit]) -> list[DeadLetter]:
        """Make room, or take out what does not fit; return the rejected, to dead-letter."""
        need: dict[Outbox, int] = {}
        for _key, items in units:
            for box, rec, _env in items:
                need[box] = need.get(box, 0) + len(rec)
        full = [box for box, size in need.items() if not box.fits(size)]
        rejected: list[DeadLetter] = []
        if not full:
            return rejected
        for box in full:
            if box.policy.overflow == "block":
                self.metrics.inc("mesh_backpressure_total", outbox=box.name)
                raise Backpressure(box.name)
        for box in full:
            if box.policy.overflow == "drop-oldest":
                dropped = await box.make_room(need[box])
                if dropped:
                    self.metrics.inc("mesh_dead_letters_total", dropped, reason="drop-oldest")
                    log.warning("outbox %s full: %d oldest events dead-lettered", box.name, dropped)
            elif box.policy.overflow == "reject-new":
                for i, (key, items) in enumerate(units):
                    keep = [(b, rec, env) for b, rec, env in items if b is not box]
                    rejected += [
                        DeadLetter("outbox full (reject-new)", box.name, "event", rec)
                        for b, rec, _env in items
                        if b is box
                    ]
                    units[i] = (key, keep)
        return rejected
