"""A node: one gateway process, its lifespan and its supervised tasks.

``async with Node(config).serve() as node:`` opens the store, starts the HTTP
server (peer links, HTTP ingress, admin API), and runs in one TaskGroup:

- ``bridge[<name>]`` — a supervisor per broker: connect, subscribe, feed
  ingress batches; on loss, reconnect with exponential backoff and jitter;
- ``egress[<i>]`` — an outbox-to-broker worker per egress rule;
- ``link[<peer>]`` — a dialer per configured peer, redialling with backoff;
- ``maintenance`` — expiring old outbox records, pruning the dedup window,
  persisting the routes learned from peers.

``reload()`` starts, stops or restarts only the tasks whose configuration
changed.

Leaving the block shuts down in order: stop receiving, let in-flight batches
finish up to ``drain_timeout``, then cancel the rest and close the store.
Nothing acknowledged upstream is lost, since acknowledgement follows commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web

from mesh.api.server import build_app
from mesh.config import MeshConfig, OutboxSettings, Peer, load_config
from mesh.core.egress import EgressRule
from mesh.core.errors import (
    Backpressure,
    BridgeError,
    ConfigError,
    ConfigErrors,
    MeshError,
    StoreError,
)
from mesh.core.filters import canonical
from mesh.core.routing import Interest, RoutingTable
from mesh.plugins import Bridge, BridgeFactory, Subscribe, load_bridge_classes
from mesh.runtime.backoff import Backoff
from mesh.runtime.egress import EgressWorker
from mesh.runtime.ingress import Ingress
from mesh.runtime.lifecycle import Drain, cancel_and_wait
from mesh.runtime.link import LinkSession, dial_forever
from mesh.runtime.metrics import Labels, Metrics
from mesh.runtime.outbox import Outboxes, OutboxPolicy
from mesh.runtime.router import Router
from mesh.runtime.store import Store

__all__ = ["Node"]

log = logging.getLogger(__name__)
# Messages taken from a broker per ingress batch: enough to share commits, few enough
# that routing one batch holds the event loop for only a few milliseconds.
INGRESS_BATCH = 512


class Node:
    """One gateway node. Build it from a validated config, then ``serve()``."""

    def __init__(
        self,
        config: MeshConfig,
        *,
        bridges: dict[str, BridgeFactory] | None = None,
        drain_timeout: float = 5.0,
        source: str | None = None,
    ) -> None:
        self.config = config
        self.source = source  # the file the configuration came from, for reloads
        self.node_id = config.node.id
        self.region = config.node.region
        self.limits = config.limits
        self.accept = list(config.accept)
        self.metrics = Metrics()
        self.table = RoutingTable(self.node_id)
        self.store = Store(config.node.data_dir / "mesh.db", sync=config.storage.sync)
        self.outboxes = Outboxes(self.store, _policy(config.outbox))
        self.router = Router(self.node_id, self.table, self.outboxes, self.metrics)
        self.ingress = Ingress(config, self.router, self.metrics)
        self.egress: list[EgressRule] = []
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
        self._tg: asyncio.TaskGroup | None = None
        self._bridge_tasks: dict[str, asyncio.Task[None]] = {}
        self._egress_tasks: dict[str, tuple[EgressWorker, asyncio.Task[None]]] = {}
        self._dial_tasks: dict[str, tuple[Peer, asyncio.Task[None]]] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._saved_routes = -1
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
        self._check_bridges(self.config)
        await self.store.open()
        runner: web.AppRunner | None = None
        try:
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
            await self._restore_routes()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._apply(self.config)
                self._maintenance = self._spawn(self._maintain(), name="maintenance")
                try:
                    yield self
                finally:
                    await self._shutdown()
        finally:
            for bridge in list(self._bridges.values()):
                with contextlib.suppress(Exception):
                    await bridge.close()
            if runner is not None:
                await runner.cleanup()
            await self.store.close()
            log.info("node %s stopped", self.node_id)

    def _check_bridges(self, config: MeshConfig) -> None:
        if self._factories is None:
            self._factories = load_bridge_classes()
        for name, b in config.brokers.items():
            if b.kind not in self._factories:
                raise MeshError(f"brokers.{name}: no bridge installed for kind {b.kind!r}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None, "the node is not serving"
        return self._tg.create_task(coro, name=name)

    async def _apply(self, config: MeshConfig) -> None:
        """Bring tasks, outboxes and the routing table in line with ``config``."""
        old = self.config
        self.config = config
        self.limits = config.limits
        self.accept = list(config.accept)
        self.ingress = Ingress(config, self.router, self.metrics)
        # Brokers: restart supervisors whose settings or subscriptions changed.
        for name in list(self._bridge_tasks):
            if name not in config.brokers or (
                old.brokers[name] != config.brokers[name]
                or _subscriptions(old, name) != _subscriptions(config, name)
            ):
                await self._stop_task(self._bridge_tasks.pop(name))
        for name in list(self._ready):
            if name not in config.brokers:
                del self._ready[name]
        for name in config.brokers:
            if name not in self._bridge_tasks:
                self._ready.setdefault(name, asyncio.Event()).clear()
                self._bridge_tasks[name] = self._spawn(
                    self._supervise_bridge(name), name=f"bridge[{name}]"
                )
        # Egress: one outbox per subscription, kept while the subscription exists.
        rules = [EgressRule(i, r, config) for i, r in enumerate(config.egress)]
        wanted = dict(zip(_egress_keys(rules), rules, strict=True))
        for key in list(self._egress_tasks):
            worker, task = self._egress_tasks[key]
            if key not in wanted or wanted[key].settings != worker.rule.settings:
                await self._stop_task(task)
                del self._egress_tasks[key]
                if key not in wanted:
                    await self._drop_outbox(key, "egress subscription removed")
        egress_boxes = {}
        for key, rule in wanted.items():
            cfg = config.egress[rule.index]
            box = await self.outboxes.get(key, _policy(cfg.outbox or config.outbox))
            egress_boxes[rule.index] = box
            if key in self._egress_tasks:
                self._egress_tasks[key][0].rule.index = rule.index
                continue
            worker = EgressWorker(
                rule, box, self._bridge_getter(rule.broker), self.metrics, drain=self._drain
            )
            self._egress_tasks[key] = (worker, self._spawn(worker.run(), name=rule.name))
        self.router.egress_boxes = egress_boxes
        self.egress = rules
        self.table.set_local({r.index: (r.pattern.text, r.filter) for r in rules})
        # Peers: dial new ones, redial changed ones, forget removed ones.
        peers = {p.id: p for p in config.peers}
        self.outboxes.default = _policy(config.outbox)
        self.router.peer_policies = {
            p.id: _policy(p.outbox) for p in config.peers if p.outbox is not None
        }
        for pid in {*peers, *self.sessions}:
            await self.router.peer_box(pid)  # applies the current policy
        for pid in list(self._dial_tasks):
            peer, task = self._dial_tasks[pid]
            if peers.get(pid) != peer:
                await self._stop_task(task)
                del self._dial_tasks[pid]
                session = self.sessions.get(pid)
                if session is not None:
                    await session.close()
                if pid not in peers:
                    self.table.forget_peer(pid)
        for pid, peer in peers.items():
            if pid not in self._dial_tasks:
                task = self._spawn(
                    dial_forever(self, peer, functools.partial(self._refused, pid)),
                    name=f"link[{pid}]",
                )
                self._dial_tasks[pid] = (peer, task)
        # Accepted links that are no longer allowed are closed.
        for pid, session in list(self.sessions.items()):
            if not session.dialed and not any(a.id in (pid, "*") for a in self.accept):
                await session.close()
                self.table.forget_peer(pid)
        self.routes_changed()

    async def reload(self, config: MeshConfig) -> None:
        """Apply a changed configuration without dropping unaffected links or brokers."""
        for key in ("id", "listen", "data_dir"):
            if getattr(config.node, key) != getattr(self.config.node, key):
                err = ConfigError(f"node.{key}", "cannot change while running", "restart the node")
                raise ConfigErrors("reload", [err])
        self._check_bridges(config)
        await self._apply(config)
        log.info("configuration reloaded", extra={"node": self.node_id})

    async def reload_from_source(self) -> None:
        """Re-read the configuration file and apply it (SIGHUP, ``mesh reload``)."""
        if self.source is None:
            raise MeshError("this node was not started from a file; nothing to reload")
        await self.reload(await asyncio.to_thread(load_config, self.source))

    async def _stop_task(self, task: asyncio.Task[None]) -> None:
        await cancel_and_wait([task])

    async def _drop_outbox(self, name: str, reason: str) -> None:
        box = await self.outboxes.get(name)
        if box.depth:
            log.warning("%s: dropping %d queued events: %s", name, box.depth, reason)
            self.metrics.inc("mesh_dead_letters_total", box.depth, reason=reason)
        await self.outboxes.remove(name)

    async def _shutdown(self) -> None:
        self._stopping.set()
        if not await self._drain.idle(self.drain_timeout):
            log.warning(
                "shutdown: work still in progress after %.1fs; cancelling", self.drain_timeout
            )
        tasks = list(self._bridge_tasks.values())
        tasks += [t for _worker, t in self._egress_tasks.values()]
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        tasks += [t for _peer, t in self._dial_tasks.values()]
        await cancel_and_wait(tasks)
        for s in list(self.sessions.values()):
            await s.close()

    # -- durable state -------------------------------------------------------------------

    async def _restore_routes(self) -> None:
        """Interests learned before a restart route (and queue) until the links return."""
        raw = await self.store.get("learned-interests")
        if raw is None:
            return
        for peer, items in orjson.loads(raw).items():
            self.table.link_state(peer, False)
            self.table.replace_learned(peer, [Interest.from_json(i) for i in items])
        self._saved_routes = self.table.version

    async def persist_routes(self) -> None:
        """Save what peers told us, so a restarted node routes before links are back."""
        if self._saved_routes == self.table.version:
            return
        version = self.table.version
        snapshot = {p: [i.to_json() for i in items] for p, items in self.table.learned().items()}
        await self.store.put("learned-interests", orjson.dumps(snapshot))
        self._saved_routes = version

    async def _maintain(self, every: float = 5.0) -> None:
        """Expire old outbox records, prune the dedup window, persist learned routes."""
        limits = self.config.limits
        while True:
            await asyncio.sleep(every)
            try:
                for box in self.outboxes.all():
                    expired = await box.expire()
                    if expired:
                        self.metrics.inc("mesh_dead_letters_total", expired, reason="expired")
                        log.warning(
                            "outbox %s: %d events expired to the dead-letter queue",
                            box.name,
                            expired,
                        )
                await self.store.prune_dedup(limits.dedup_window, limits.dedup_max_age)
                await self.persist_routes()
            except StoreError as exc:
                log.error("maintenance failed: %s", exc)

    async def redrive(self, ids: list[int] | None) -> tuple[list[int], list[dict[str, Any]]]:
        """Put dead-lettered events back into the outbox they failed in.

        Returns the ids redriven and, for the others, why not: a message that
        never became an event cannot be redriven, nor an event whose outbox no
        longer exists (its egress rule was removed).
        """
        done: list[int] = []
        skipped: list[dict[str, Any]] = []
        after = 0
        while True:
            if ids is None:
                entries = await self.store.dead_letters(limit=1000, after=after)
            else:
                entries = await self.store.dead_letters(ids=ids)
            if not entries:
                break
            for e in entries:
                box = self.outboxes.find(e.place) if e.kind == "event" else None
                if box is None:
                    why = (
                        "not an event (invalid input)"
                        if e.kind != "event"
                        else f"outbox {e.place} no longer exists"
                    )
                    skipped.append({"id": e.id, "reason": why})
                    continue
                if await self.store.redrive(e.id, box.box) is not None:
                    box.redriven(len(e.record))
                    done.append(e.id)
            if ids is not None:
                break
            after = entries[-1].id
        if done:
            self.metrics.inc("mesh_redriven_total", len(done))
            log.info("redrove %d dead letters", len(done))
        return done, skipped

    def egress_workers(self) -> list[EgressWorker]:
        return sorted((w for w, _t in self._egress_tasks.values()), key=lambda w: w.rule.index)

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

    def _bridge_getter(self, name: str) -> Callable[[], Awaitable[Bridge]]:
        async def get() -> Bridge:
            while True:
                await self._ready[name].wait()
                bridge = self._bridges.get(name)
                if bridge is not None:
                    return bridge
                await asyncio.sleep(0.05)

        return get

    async def _supervise_bridge(self, name: str) -> None:
        assert self._factories is not None
        cfg = self.config.brokers[name]
        subs = _subscriptions(self.config, name)
        backoff = Backoff(0.2, 10.0)
        failures = 0
        while not self._stopping.is_set():
            bridge = self._factories[cfg.kind](name, cfg, self.node_id)
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
            batch = await bridge.receive(INGRESS_BATCH)
            while True:
                if self._stopping.is_set():
                    for d in batch:
                        await d.nack()
                    return
                try:
                    async with self._drain.work():
                        await self.ingress.accept(name, batch)
                    break
                except Backpressure as exc:
                    # Nothing was written and nothing acked: the broker keeps the
                    # messages. Wait for room, then try the same batch again.
                    log.debug("broker %s: %s", name, exc)
                    await self.outboxes.wait_for_room(exc)

    # -- introspection ---------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        out = []
        names = [p.id for p in self.config.peers]
        names += [p for p in self.sessions if p not in names]
        for p in names:
            s = self.sessions.get(p)
            box = self.outboxes.find(f"peer:{p}")
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
            "interests_looped": self.table.looped,
            "outboxes": [
                {"name": ob.name, "depth": ob.depth, "bytes": ob.bytes}
                for ob in self.outboxes.all()
            ],
            "metrics": self.metrics.snapshot(),
        }


def _policy(settings: OutboxSettings) -> OutboxPolicy:
    return OutboxPolicy(settings.max_bytes, settings.max_age, settings.overflow)


def _subscriptions(config: MeshConfig, broker: str) -> list[Subscribe]:
    out = []
    for r in config.ingress:
        if r.from_ == broker:
            digest = hashlib.sha1(r.topic.encode()).hexdigest()[:10]
            durable = r.durable or f"mesh-{config.node.id}-{digest}"
            out.append(Subscribe(r.topic, r.qos, r.queue_group, durable))
    return out


def _egress_keys(rules: list[EgressRule]) -> list[str]:
    """Stable outbox names: the subscription (broker, pattern, filter), numbered if repeated."""
    seen: dict[str, int] = {}
    keys = []
    for r in rules:
        base = f"egress:{r.broker}:{r.pattern.text}:{canonical(r.filter) if r.filter else ''}"
        n = seen[base] = seen.get(base, 0) + 1
        keys.append(base if n == 1 else f"{base}#{n}")
    return keys


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return configured
