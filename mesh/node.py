"""A node: one gateway process, its lifespan and its supervised tasks.

``async with Node(config).serve() as node:`` opens the store, starts the HTTP
server (peer links, HTTP ingress, admin API), and runs in one TaskGroup:

- ``bridge[<name>]`` — a supervisor per broker: connect, subscribe, feed
  ingress batches; on loss, reconnect with exponential backoff and jitter;
- ``egress[<i>]`` — an outbox-to-broker worker per egress rule;
- ``link[<peer>]`` — a dialer per configured peer, redialling with backoff.

Leaving the block shuts down in order: stop receiving, let in-flight batches
finish up to ``drain_timeout``, then cancel the rest and close the store.
Nothing acknowledged upstream is lost, since acknowledgement follows commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from mesh.backoff import Backoff
from mesh.bridge import Bridge, BridgeFactory, Subscribe, load_bridge_classes
from mesh.config import MeshConfig
from mesh.dedup import Dedup
from mesh.egress import EgressRule, EgressWorker
from mesh.errors import BridgeError, MeshError
from mesh.ingress import Ingress
from mesh.lifecycle import Drain
from mesh.link import LinkSession, dial_forever
from mesh.metrics import Labels, Metrics
from mesh.outbox import Outboxes
from mesh.router import Router
from mesh.routing import RoutingTable
from mesh.server import build_app
from mesh.store import Store

__all__ = ["Node"]

log = logging.getLogger(__name__)


class Node:
    """One gateway node. Build it from a validated config, then ``serve()``."""

    def __init__(
        self,
        config: MeshConfig,
        *,
        bridges: dict[str, BridgeFactory] | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.node_id = config.node.id
        self.region = config.node.region
        self.limits = config.limits
        self.accept = list(config.accept)
        self.metrics = Metrics()
        self.table = RoutingTable(self.node_id)
        self.store = Store(config.node.data_dir / "mesh.db")
        self.outboxes = Outboxes(self.store)
        self.router = Router(
            self.node_id, self.table, self.outboxes, self.metrics, Dedup(config.limits.dedup_window)
        )
        self.ingress = Ingress(config, self.router, self.metrics)
        self.egress = [EgressRule(i, r, config) for i, r in enumerate(config.egress)]
        self.sessions: dict[str, LinkSession] = {}
        self.dialing: set[str] = set()
        self.refusals: dict[str, str] = {}
        self.drain_timeout = drain_timeout
        self.started = time.time()
        self.port = 0
        self._factories = bridges
        self._bridges: dict[str, Bridge] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()
        self._drain = Drain()
        self.metrics.gauge(
            "mesh_outbox_depth",
            lambda: {(("outbox", ob.name),): ob.depth for ob in self.outboxes.all()},
        )
        self.metrics.gauge(
            "mesh_outbox_bytes",
            lambda: {(("outbox", ob.name),): ob.bytes for ob in self.outboxes.all()},
        )
        self.metrics.gauge("mesh_link_up", self._links_up)

    def _links_up(self) -> dict[Labels, float]:
        peers = {p.id for p in self.config.peers} | set(self.sessions)
        return {(("peer", p),): 1.0 if p in self.sessions else 0.0 for p in sorted(peers)}

    # -- lifespan ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[Node]:
        factories = self._factories if self._factories is not None else load_bridge_classes()
        for name, b in self.config.brokers.items():
            if b.kind not in factories:
                raise MeshError(f"brokers.{name}: no bridge installed for kind {b.kind!r}")
        await self.store.open()
        runner: web.AppRunner | None = None
        try:
            for rule in self.egress:
                self.router.egress_boxes[rule.index] = await self.outboxes.get(
                    f"egress:{rule.index}:{rule.broker}:{rule.pattern.text}"
                )
            self.table.set_local({r.index: (r.pattern.text, r.filter) for r in self.egress})
            runner = web.AppRunner(
                build_app(self), handle_signals=False, shutdown_timeout=2.0, access_log=None
            )
            await runner.setup()
            site = web.TCPSite(
                runner, self.config.node.host, self.config.node.port, reuse_address=True
            )
            await site.start()
            self.port = _bound_port(runner, self.config.node.port)
            self.started = time.time()
            log.info("node %s listening on %s:%d", self.node_id, self.config.node.host, self.port)
            async with asyncio.TaskGroup() as tg:
                tasks: list[asyncio.Task[None]] = []
                for name in self.config.brokers:
                    self._ready[name] = asyncio.Event()
                    tasks.append(
                        tg.create_task(
                            self._supervise_bridge(name, factories), name=f"bridge[{name}]"
                        )
                    )
                others: list[asyncio.Task[None]] = []
                for rule in self.egress:
                    worker = EgressWorker(
                        rule,
                        self.router.egress_boxes[rule.index],
                        self._bridge_getter(rule.broker),
                        self.metrics,
                        drain=self._drain,
                    )
                    others.append(tg.create_task(worker.run(), name=rule.name))
                for peer in self.config.peers:
                    others.append(
                        tg.create_task(
                            dial_forever(self, peer, functools.partial(self._refused, peer.id)),
                            name=f"link[{peer.id}]",
                        )
                    )
                try:
                    yield self
                finally:
                    await self._shutdown(tasks, others)
        finally:
            for bridge in list(self._bridges.values()):
                with contextlib.suppress(Exception):
                    await bridge.close()
            if runner is not None:
                await runner.cleanup()
            await self.store.close()
            log.info("node %s stopped", self.node_id)

    async def _shutdown(
        self, ingress: list[asyncio.Task[None]], others: list[asyncio.Task[None]]
    ) -> None:
        self._stopping.set()
        if not await self._drain.idle(self.drain_timeout):
            log.warning(
                "shutdown: work still in progress after %.1fs; cancelling", self.drain_timeout
            )
        for t in ingress + others:
            t.cancel()
        for s in list(self.sessions.values()):
            await s.close()

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until every broker is connected and subscribed."""
        async with asyncio.timeout(timeout):
            for event in self._ready.values():
                await event.wait()

    def _refused(self, peer: str, reason: str) -> None:
        self.refusals[peer] = reason

    def routes_changed(self) -> None:
        for s in self.sessions.values():
            s.changed.set()

    # -- bridges -------------------------------------------------------------------

    def _bridge_getter(self, name: str) -> Any:
        async def get() -> Bridge:
            while True:
                await self._ready[name].wait()
                bridge = self._bridges.get(name)
                if bridge is not None:
                    return bridge
                await asyncio.sleep(0.05)

        return get

    async def _supervise_bridge(self, name: str, factories: dict[str, BridgeFactory]) -> None:
        cfg = self.config.brokers[name]
        subs = [Subscribe(r.topic, r.qos, r.queue_group) for r in self.ingress.rules_for(name)]
        backoff = Backoff(0.2, 10.0)
        failures = 0
        while not self._stopping.is_set():
            bridge = factories[cfg.kind](name, cfg, self.node_id)
            try:
                await bridge.connect(subs)
            except BridgeError as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "broker %s: %s; retrying", name, exc.reason, extra={"broker": name})
                with contextlib.suppress(Exception):
                    await bridge.close()
                await asyncio.sleep(backoff.next())
                continue
            failures = 0
            backoff.reset()
            self._bridges[name] = bridge
            self._ready[name].set()
            log.info("broker %s connected", name, extra={"broker": name})
            try:
                await self._ingress_loop(name, bridge)
            except BridgeError as exc:
                log.warning("broker %s: %s; reconnecting", name, exc.reason, extra={"broker": name})
            finally:
                self._ready[name].clear()
                self._bridges.pop(name, None)
                with contextlib.suppress(Exception):
                    await bridge.close()
            await asyncio.sleep(backoff.next())

    async def _ingress_loop(self, name: str, bridge: Bridge) -> None:
        while not self._stopping.is_set():
            batch = await bridge.receive(512)
            if self._stopping.is_set():
                for d in batch:
                    d.nack()
                return
            async with self._drain.work():
                await self.ingress.accept(name, batch)

    # -- introspection ---------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        out = []
        names = [p.id for p in self.config.peers]
        names += [p for p in self.sessions if p not in names]
        for p in names:
            s = self.sessions.get(p)
            box = self.outboxes._boxes.get(f"peer:{p}")
            out.append(
                {
                    "id": p,
                    "direction": ("dialed" if s.dialed else "accepted")
                    if s
                    else ("dialed" if p in self.dialing else "accepted"),
                    "state": "up" if s else ("refused" if p in self.refusals else "down"),
                    "refused_reason": self.refusals.get(p) if not s else None,
                    "region": s.region if s else None,
                    "since": s.since if s else None,
                    "sent": s.sent if s else 0,
                    "received": s.received if s else 0,
                    "outbox": box.depth if box else 0,
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "region": self.region,
            "uptime": round(time.time() - self.started, 3),
            "brokers": {
                n: self._ready[n].is_set() if n in self._ready else False
                for n in self.config.brokers
            },
            "peers": self.peers(),
            "outboxes": [
                {"name": ob.name, "depth": ob.depth, "bytes": ob.bytes}
                for ob in self.outboxes.all()
            ],
            "metrics": self.metrics.snapshot(),
        }


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return configured
