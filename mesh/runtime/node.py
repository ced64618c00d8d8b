"""A node: one gateway process, its lifespan and its supervised tasks.

``async with Node(config).serve() as node:`` opens the store, starts the HTTP
server (peer links, HTTP ingress, admin API), and runs in one TaskGroup,
every task under :func:`mesh.runtime.lifecycle.supervise`:

- ``bridge[<name>]`` — a broker connection: the bridge from its plugin's
  spec connects and subscribes, and its inbox feeds ingress batches; when the
  connection is lost the supervisor reconnects with backoff. The bridge's own
  tasks (JetStream pullers, keepalives) run in a scope that ends with it;
- ``egress[<i>]`` — an outbox-to-broker worker per egress rule;
- ``link[<peer>]`` — a dialer per configured peer, redialling with backoff;
- ``maintenance`` — expiring old outbox records, pruning the dedup window;
- ``routes`` — persisting the routes learned from peers when they change.

The node dispatches on each broker's :class:`~mesh.plugins.BridgeSpec`, never
on a kind's name. ``reload()`` starts, stops or restarts only the tasks whose
configuration changed.

Leaving the block shuts down in order: stop receiving, let in-flight batches
finish up to ``drain_timeout``, then cancel the rest and close the store.
Nothing acknowledged upstream is lost, since acknowledgement follows commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from mesh.api.guard import ConnectionGuard, ServerLog
from mesh.api.ingress import HttpRoutes
from mesh.api.server import build_app
from mesh.config import AcceptPeer, MeshConfig, NodeTls, OutboxSettings, Peer, load_config
from mesh.core.catalog import Catalog
from mesh.core.certs import untrusted
from mesh.core.egress import EgressRule
from mesh.core.errors import ConfigError, ConfigErrors, MeshError, Overloaded
from mesh.core.filters import canonical
from mesh.core.frames import LINK_VERSIONS, InterestRefused, parse_interest, parse_reach
from mesh.core.ingress import IngressRule
from mesh.core.message import Subscribe
from mesh.core.routing import Interest, RoutingTable
from mesh.core.rules import EVERYTHING, TopicRules
from mesh.core.schemas import NO_SCHEMAS, Schemas
from mesh.plugins import Bridge, BridgeContext, BridgeSpec, Delivery, load_specs
from mesh.runtime.admin import NodeAdmin
from mesh.runtime.backoff import Backoff
from mesh.runtime.egress import EgressWorker
from mesh.runtime.inbox import Inbox
from mesh.runtime.ingress import Ingress
from mesh.runtime.lifecycle import Drain, Faults, TaskScope, cancel_and_wait
from mesh.runtime.link import LinkSession, accept_link, dial_once, token_refusal
from mesh.runtime.metrics import Labels, Metrics
from mesh.runtime.outbox import Outboxes, OutboxPolicy
from mesh.runtime.router import Router
from mesh.runtime.store import open_store
from mesh.runtime.tls import ServerTls, TlsSite, handshake_label, ssl_detail

if TYPE_CHECKING:
    from mesh.runtime.tracing import Spans

__all__ = ["Node"]

log = logging.getLogger(__name__)
# Messages taken from a broker per ingress batch: enough to share commits, few enough
# that routing one batch holds the event loop for only a few milliseconds.
INGRESS_BATCH = 512
ROUTE_SAVE_DELAY = 0.2  # seconds to coalesce route changes before persisting them
_ROUTES_KEY = "learned-interests"
_REACH_KEY = "learned-reach"


class Node:
    """One gateway node. Build it from a validated config, then ``serve()``."""

    def __init__(
        self,
        config: MeshConfig,
        *,
        specs: Mapping[str, BridgeSpec] | None = None,
        drain_timeout: float = 5.0,
        source: str | None = None,
        link_versions: tuple[int, int] = LINK_VERSIONS,
    ) -> None:
        self.config = config
        self.source = source  # the file the configuration came from, for reloads
        self.node_id = config.node.id
        self.region = config.node.region
        self.limits = config.limits
        self.canary_interval = config.node.canary_interval
        self.accept = list(config.accept)
        self.link_versions = link_versions
        self.metrics = Metrics()
        self.faults = Faults(self.metrics)
        self.table = RoutingTable(self.node_id)
        self.maintenance_every = 5.0  # seconds between maintenance rounds
        self.store = open_store(config.node.data_dir, sync=config.storage.sync)
        self.outboxes = Outboxes(self.store, _policy(config.outbox))
        self.router = Router(self.node_id, self.table, self.outboxes, self.metrics)
        self.catalog = Catalog(self.node_id)  # event types seen here and reported by peers
        self.router.catalog = self.catalog
        self.specs: Mapping[str, BridgeSpec] = specs if specs is not None else load_specs()
        self.ingress = Ingress([], self.router, self.metrics)
        self.schemas = NO_SCHEMAS  # compiled from config.schemas by _apply
        self.spans: Spans | None = None  # OpenTelemetry, when tracing: is configured
        self.http = HttpRoutes(
            order=list(config.brokers),
            starting=self._brokers_connecting,
            refused=self._http_refused,
        )
        # The server's client_max_size, fixed when it starts (a reload does not change it).
        self.http.max_body = config.limits.max_event_size * 64
        self.guard = ConnectionGuard(
            config.limits.http_header_timeout,
            config.limits.max_pending_connections,
            self._http_refused,
        )
        self.egress: list[EgressRule] = []
        self.sessions: dict[str, LinkSession] = {}
        self.dialing: set[str] = set()
        self.pending_hellos = 0  # /mesh connections still in their hello
        self.refusals: dict[str, str] = {}
        self.drain_timeout = drain_timeout
        self.started = time.time()
        self.port = 0
        self.tls: ServerTls | None = None  # the listener's TLS, while serving
        self._bridges: dict[str, Bridge] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()
        self._drain = Drain()
        self._scope: TaskScope | None = None
        self._bridge_tasks: dict[str, asyncio.Task[None]] = {}
        self._egress_tasks: dict[str, tuple[EgressWorker, asyncio.Task[None]]] = {}
        self._egress_started = False  # the first _apply also clears outboxes of gone rules
        self._dial_tasks: dict[str, tuple[Peer, asyncio.Task[None]]] = {}
        self._rules: dict[str, tuple[TopicRules, TopicRules]] = {"*": (EVERYTHING, EVERYTHING)}
        self._saved_routes = -1
        self._routes_dirty = asyncio.Event()
        self.metrics.gauge(
            "mesh_outbox_depth",
            lambda: {(("outbox", ob.name),): ob.depth for ob in self.outboxes.all()},
        )
        self.metrics.gauge(
            "mesh_outbox_bytes",
            lambda: {(("outbox", ob.name),): ob.bytes for ob in self.outboxes.all()},
        )
        self.metrics.gauge(
            "mesh_outbox_oldest_seconds",
            lambda: {
                (("outbox", ob.name),): round(ob.oldest_age(), 3) for ob in self.outboxes.all()
            },
        )
        self.metrics.gauge("mesh_link_up", self._links_up)
        self.metrics.gauge("mesh_link_canary_ok", self._canaries_ok)
        self.metrics.gauge(
            "mesh_broker_up",
            lambda: {
                (("broker", b),): 1.0 if self.broker_connected(b) else 0.0
                for b in self.config.brokers
            },
        )
        self.metrics.gauge("mesh_store_full", lambda: {(): 1.0 if self.store.full else 0.0})

    def _links_up(self) -> dict[Labels, float]:
        peers = {p.id for p in self.config.peers} | set(self.sessions)
        return {(("peer", p),): 1.0 if p in self.sessions else 0.0 for p in sorted(peers)}

    def _canaries_ok(self) -> dict[Labels, float]:
        # The series stays while a configured link is degraded or down (then 0).
        peers = {p.id for p in self.config.peers} | set(self.sessions)
        out: dict[Labels, float] = {}
        for p in sorted(peers):
            s = self.sessions.get(p)
            out[(("peer", p),)] = 1.0 if s is not None and s.canary_ok() else 0.0
        return out

    # -- lifespan ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[Node]:
        self._check_bridges(self.config)
        await self.store.open()
        runner: web.AppRunner | None = None
        try:
            if self.config.tracing is not None:
                from mesh.runtime.tracing import start_spans  # only imported when configured

                self.spans = start_spans(self.config.tracing, self.node_id)
            app = build_app(
                NodeAdmin(self),
                self.http,
                functools.partial(accept_link, self),
                max_body=self.http.max_body,
                guard=self.guard,
            )
            runner = web.AppRunner(
                app,
                handle_signals=False,
                shutdown_timeout=2.0,
                access_log=None,
                # After a response, the next request head has this long (the guard
                # bounds the first one); fixed at start, a reload does not change it.
                keepalive_timeout=self.config.limits.http_header_timeout,
                logger=ServerLog(self._http_refused),
            )
            await runner.setup()
            assert runner.server is not None
            self.guard.attach(runner.server)
            if self.config.node.tls is not None:
                self.tls = await ServerTls.load(self.config.node.tls)
            site: web.TCPSite
            if self.tls is not None:
                site = TlsSite(
                    runner,
                    self.config.node.host,
                    self.config.node.port,
                    self.tls.context,
                    self._tls_failed,
                    self.guard,
                    self._http_refused,
                )
            else:
                site = web.TCPSite(
                    runner, self.config.node.host, self.config.node.port, reuse_address=True
                )
            await site.start()
            self.port = _bound_port(runner, self.config.node.port)
            self.started = time.time()
            log.info(
                "node %s listening on %s:%d%s",
                self.node_id,
                self.config.node.host,
                self.port,
                f" (TLS, client certificates {self.config.node.tls.client_auth})"
                if self.config.node.tls is not None
                else "",
            )
            await self._restore_routes()
            async with asyncio.TaskGroup() as tg:
                self._scope = TaskScope(
                    self.faults, lambda coro, name: tg.create_task(coro, name=name)
                )
                await self._apply(self.config)
                self._scope.spawn("maintenance", self._maintain)
                self._scope.spawn("routes", self._persist_routes, Backoff(1.0, 30.0))
                try:
                    yield self
                finally:
                    await self._shutdown()
        finally:
            for bridge in list(self._bridges.values()):
                await self._close_bridge(bridge)
            if runner is not None:
                await runner.cleanup()
            await self.store.close()
            if self.spans is not None:
                await asyncio.to_thread(self.spans.shutdown)
            log.info("node %s stopped", self.node_id)

    def _check_bridges(self, config: MeshConfig) -> None:
        for name, b in config.brokers.items():
            if b.kind not in self.specs:
                raise MeshError(f"brokers.{name}: no bridge installed for kind {b.kind!r}")

    def _spec(self, broker: str) -> BridgeSpec:
        return self.specs[self.config.brokers[broker].kind]

    def _spawn(
        self, name: str, body: Callable[[], Awaitable[None]], backoff: Backoff | None = None
    ) -> asyncio.Task[None]:
        assert self._scope is not None, "the node is not serving"
        return self._scope.spawn(name, body, backoff)

    async def _apply(self, config: MeshConfig) -> None:
        """Bring tasks, outboxes and the routing table in line with ``config``."""
        # Schema files are read and compiled first (off the loop): one that no longer
        # loads fails the reload before anything changed.
        try:
            schemas = await asyncio.to_thread(Schemas.compile, config.schemas)
        except ConfigError as exc:
            raise ConfigErrors("reload", [exc]) from None
        self.schemas = schemas
        old = self.config
        self.config = config
        self.limits = config.limits
        self.canary_interval = config.node.canary_interval
        self.accept = list(config.accept)
        self.ingress = Ingress(
            self._ingress_rules(config),
            self.router,
            self.metrics,
            spans=self.spans,
            kinds={n: b.kind for n, b in config.brokers.items()},
            schemas=schemas,
        )
        self.http.order = list(config.brokers)
        self.http.body_timeout = config.limits.http_body_timeout
        self.guard.header_timeout = config.limits.http_header_timeout
        self.guard.max_pending = config.limits.max_pending_connections
        # Brokers: restart supervisors whose settings or subscriptions changed.
        for name in list(self._bridge_tasks):
            if name not in config.brokers or (
                old.brokers[name] != config.brokers[name]
                or _subscriptions(old, name) != _subscriptions(config, name)
            ):
                await cancel_and_wait([self._bridge_tasks.pop(name)])
        for name in list(self._ready):
            if name not in config.brokers:
                del self._ready[name]
        starting = [name for name in config.brokers if name not in self._bridge_tasks]
        for name in starting:
            self._ready.setdefault(name, asyncio.Event()).clear()
        # Egress: one outbox per rule, named after it, kept while the rule exists.
        rules = self._egress_rules(config)
        wanted = {_egress_key(r): r for r in rules}
        await self._carry_outboxes(wanted)
        for key in list(self._egress_tasks):
            worker, task = self._egress_tasks[key]
            if key not in wanted or wanted[key].settings != worker.rule.settings:
                await cancel_and_wait([task])
                del self._egress_tasks[key]
                if key not in wanted:
                    await self._drop_outbox(key)
        egress_boxes = {}
        for key, rule in wanted.items():
            cfg = config.egress[rule.index]
            box = await self.outboxes.get(key, _policy(cfg.outbox or config.outbox))
            egress_boxes[rule.index] = box
            if key in self._egress_tasks:
                self._egress_tasks[key][0].rule.index = rule.index
                self._egress_tasks[key][0].schemas = schemas
                continue
            worker = EgressWorker(
                rule,
                box,
                self._bridge_getter(rule.broker),
                self.metrics,
                drain=self._drain,
                spans=self.spans,
                system=config.brokers[rule.broker].kind,
                schemas=schemas,
            )
            self._egress_tasks[key] = (worker, self._spawn(rule.name, worker.run))
        self.router.egress_boxes = egress_boxes
        self.egress = rules
        self.table.set_local({r.index: (r.pattern.text, r.filter) for r in rules})
        # Brokers start only now: an event they take in must find this node's own
        # subscriptions in the table, or it would be accepted and then go unrouted.
        for name in starting:
            self._bridge_tasks[name] = self._spawn(
                f"bridge[{name}]", functools.partial(self._bridge_session, name)
            )
        # Peers: dial new ones, redial changed ones, forget removed ones.
        peers = {p.id: p for p in config.peers}
        self.outboxes.default = _policy(config.outbox)
        self.router.peer_policies = {
            p.id: _policy(p.outbox) for p in config.peers if p.outbox is not None
        }
        for pid in {*peers, *self.sessions}:
            await self.router.peer_box(pid)  # applies the current policy
        self.table.max_per_peer = config.limits.max_interests_per_peer
        self._compile_rules(config)
        for pid in {*peers, *self.sessions, *self.table.learned()}:
            self.apply_rules(pid)
        for pid in list(self._dial_tasks):
            peer, task = self._dial_tasks[pid]
            if pid not in peers or _connection(peers[pid]) != _connection(peer):
                await cancel_and_wait([task])
                del self._dial_tasks[pid]
                self.dialing.discard(pid)
                session = self.sessions.get(pid)
                if session is not None:
                    await session.close()
                if pid not in peers:
                    self.table.forget_peer(pid)
        for pid, peer in peers.items():
            if pid not in self._dial_tasks:
                self.dialing.add(pid)
                body = functools.partial(
                    dial_once, self, peer, functools.partial(self._refused, pid)
                )
                task = self._spawn(f"link[{pid}]", body, Backoff(0.2, 15.0))
                self._dial_tasks[pid] = (peer, task)
        # Accepted links that are no longer allowed are closed: the id was removed,
        # or the token it linked with no longer admits it (rotated or withdrawn).
        for pid, session in list(self.sessions.items()):
            if session.dialed:
                continue
            reason = token_refusal(self.accept, pid, session.token or "")
            if reason is not None:
                log.warning("link %s closed by reload: %s", pid, reason, extra={"peer": pid})
                self.metrics.inc("mesh_link_closed_by_reload_total", peer=pid)
                await session.close()
                if not any(a.id in (pid, "*") for a in self.accept):
                    self.table.forget_peer(pid)
        self.routes_changed()

    def _compile_rules(self, config: MeshConfig) -> None:
        """Compile every peer's import and export once per configuration (the hot path asks)."""

        def both(entry: Peer | AcceptPeer) -> tuple[TopicRules, TopicRules]:
            return (
                TopicRules.compile(entry.rule_entries("import")),
                TopicRules.compile(entry.rule_entries("export")),
            )

        accept: dict[str, tuple[TopicRules, TopicRules]] = {}
        for a in config.accept:
            accept.setdefault(a.id, both(a))
        dialed = {p.id: both(p) for p in config.peers}
        self._rules = {"*": accept.pop("*", (EVERYTHING, EVERYTHING)), **accept, **dialed}

    def apply_rules(self, peer: str) -> None:
        """Give the routing table our rules for ``peer``: its ``peers[]`` entry, else its
        own ``accept`` entry, else the wildcard one."""
        imp, exp = self._rules.get(peer) or self._rules["*"]
        self.table.set_rules(peer, imp, exp)

    def _ingress_rules(self, config: MeshConfig) -> list[IngressRule]:
        rules = []
        for i, r in enumerate(config.ingress):
            broker = config.brokers[r.from_]
            spec = self.specs[broker.kind]
            rules.append(
                IngressRule(
                    i,
                    r,
                    node_id=config.node.id,
                    max_size=config.limits.max_event_size,
                    syntax=spec.syntax,
                    binding=spec.binding(broker),
                )
            )
        return rules

    def _egress_rules(self, config: MeshConfig) -> list[EgressRule]:
        rules = []
        for i, r in enumerate(config.egress):
            broker = config.brokers[r.to]
            spec = self.specs[broker.kind]
            rules.append(
                EgressRule(
                    i,
                    r,
                    binding=spec.binding(broker),
                    separator=spec.syntax.separator,
                    dedup_ids=spec.capabilities(broker).dedup_ids,
                    settings=(r.model_dump(), broker.model_dump()),
                )
            )
        return rules

    async def reload(self, config: MeshConfig) -> None:
        """Apply a changed configuration without dropping unaffected links or brokers."""
        for key in ("id", "listen", "data_dir"):
            if getattr(config.node, key) != getattr(self.config.node, key):
                err = ConfigError(f"node.{key}", "cannot change while running", "restart the node")
                raise ConfigErrors("reload", [err])
        old_tls, new_tls = self.config.node.tls, config.node.tls
        if (old_tls is None) != (new_tls is None):
            what = "added" if new_tls is not None else "removed"
            err = ConfigError(
                "node.tls",
                f"cannot be {what} while running (the listener would change between clear and TLS)",
                "restart the node",
            )
            raise ConfigErrors("reload", [err])
        self._check_bridges(config)
        if self.tls is not None and new_tls is not None:
            try:
                await self.tls.reload(new_tls)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                err = ConfigError("node.tls", f"certificates do not load: {exc}")
                raise ConfigErrors("reload", [err]) from exc
            log.info("node.tls reloaded: new handshakes use the new certificates")
        await self._apply(config)
        if new_tls is not None:
            await self._recheck_certificates(new_tls)
        log.info("configuration reloaded", extra={"node": self.node_id})

    async def _recheck_certificates(self, tls: NodeTls) -> None:
        """Close accepted links whose client certificate the reloaded TLS settings refuse.

        They must authenticate again, in a new handshake under the new settings;
        the others stay up, the same sessions.
        """
        ca = await asyncio.to_thread(tls.ca.read_bytes) if tls.ca is not None else None
        for pid, session in list(self.sessions.items()):
            if session.dialed:
                continue
            reason = None
            if session.certificate is None:
                if tls.client_auth == "required":
                    reason = "node.tls.client_auth is now required and it presented no certificate"
            elif ca is not None and tls.client_auth != "none":
                reason = untrusted(session.certificate, ca)
            if reason is not None:
                log.warning("link %s closed by reload: %s", pid, reason, extra={"peer": pid})
                self.metrics.inc("mesh_link_closed_by_reload_total", peer=pid)
                await session.close()

    async def reload_from_source(self) -> None:
        """Re-read the configuration file and apply it (SIGHUP, ``mesh reload``)."""
        if self.source is None:
            raise MeshError("this node was not started from a file; nothing to reload")
        load = functools.partial(load_config, self.source, specs=self.specs)
        await self.reload(await asyncio.to_thread(load))

    async def _carry_outboxes(self, wanted: dict[str, EgressRule]) -> None:
        """Move queued events to the outbox names of ``wanted`` rather than orphan them.

        An outbox belongs to a subscription (broker, pattern, filter). Two cases
        move one: the keys of versions before egress names (one per
        subscription), found in the store on upgrade; and, on a reload, a rule
        whose name changed (a default ``<to>:<index>`` moves when a rule is
        inserted before it) while its subscription stayed. A running rule whose
        subscription is gone from ``wanted`` has its queued events dead-lettered,
        as a removed subscription always had.
        """
        stored = set(await self.store.box_names())
        moving: dict[str, str] = {}  # old key -> new key
        taken: set[str] = set()
        for old, rule in zip(
            _legacy_egress_keys(list(wanted.values())), wanted.values(), strict=True
        ):
            new = _egress_key(rule)
            if old in stored and new not in stored and old not in self._egress_tasks:
                moving[old] = new
                taken.add(new)
        stays = {
            k
            for k, (w, _t) in self._egress_tasks.items()
            if k in wanted and _subscription(wanted[k]) == _subscription(w.rule)
        }
        for old, (worker, task) in list(self._egress_tasks.items()):
            sub = _subscription(worker.rule)
            if old in stays:
                continue  # stays where it is
            await cancel_and_wait([task])
            del self._egress_tasks[old]
            successor = next(
                (
                    k
                    for k, r in wanted.items()
                    if _subscription(r) == sub and k not in taken and k not in stays
                ),
                None,
            )
            if successor is None:
                await self._drop_outbox(old)
            else:
                moving[old] = successor
                taken.add(successor)
        # Two steps, so that rules swapping names do not collide.
        for old in moving:
            await self.outboxes.rename(old, f"{old}#moving")
        for old, new in moving.items():
            if new in stored and new not in moving:
                await self._drop_outbox(new)  # a stale box of that name: its events are counted
            if await self.outboxes.rename(f"{old}#moving", new):
                log.info("outbox %s is now %s, with what it holds", old, new)
        if not self._egress_started:
            # At start, an egress outbox no rule wants any more (its rule was removed
            # while the node was down, or before an upgrade) is not left orphaned: its
            # events are dead-lettered and counted, as a removed subscription's are.
            self._egress_started = True
            for name in stored:
                if name.startswith("egress:") and name not in wanted and name not in moving:
                    await self._drop_outbox(name)

    async def _drop_outbox(self, name: str) -> None:
        """An egress subscription was removed: its queued events go to the DLQ, counted."""
        box = await self.outboxes.get(name)
        if box.depth:
            moved = await self.store.evict(
                box.box, name, after=0, need=1 << 62, reason="egress subscription removed"
            )
            if moved:
                self.metrics.inc(
                    "mesh_dead_letters_total", len(moved), reason="egress subscription removed"
                )
                log.warning(
                    "%s: egress subscription removed; %d queued events moved to the "
                    "dead-letter queue (redrivable if the subscription returns)",
                    name,
                    len(moved),
                )
        await self.outboxes.remove(name)

    async def _shutdown(self) -> None:
        self._stopping.set()
        if not await self._drain.idle(self.drain_timeout):
            log.warning(
                "shutdown: work still in progress after %.1fs; cancelling", self.drain_timeout
            )
        tasks = list(self._bridge_tasks.values())
        tasks += [t for _worker, t in self._egress_tasks.values()]
        tasks += [t for _peer, t in self._dial_tasks.values()]
        if self._scope is not None:
            tasks += self._scope.tasks
        await cancel_and_wait(tasks)
        for s in list(self.sessions.values()):
            await s.close()

    # -- durable state -------------------------------------------------------------------

    async def _restore_routes(self) -> None:
        """Interests learned before a restart route (and queue) until the links return.

        What was persisted is checked like anything a peer sends: a bad entry
        (say, saved by an older version) is dropped with a warning, never fatal.
        """
        await self._restore_reach()
        saved = await self._saved(_ROUTES_KEY, "routes")
        dropped = 0
        for peer, items in saved.items():
            good: list[Interest] = []
            for item in items if isinstance(items, list) else []:
                parsed = parse_interest(item, str(peer))
                if isinstance(parsed, InterestRefused):
                    dropped += 1
                    log.warning("persisted route via %s dropped: %s", peer, parsed.detail)
                else:
                    good.append(parsed)
            self.table.link_state(str(peer), False)
            self.table.replace_learned(str(peer), good)
        if dropped:
            self.metrics.inc(
                "mesh_interests_refused_total", dropped, peer="(restored)", reason="stored"
            )
        self._saved_routes = self.table.version

    async def _restore_reach(self) -> None:
        """Who was behind each peer, so queued events from them pass the origin check."""
        for peer, paths in (await self._saved(_REACH_KEY, "reach")).items():
            refused: list[InterestRefused] = []
            self.table.set_reach(str(peer), parse_reach(paths, str(peer), refused))
            for r in refused:
                log.warning("persisted reach via %s dropped: %s", peer, r.detail)

    async def _saved(self, key: str, what: str) -> dict[str, Any]:
        """A persisted mapping of peers, or nothing if absent or unreadable (with a warning)."""
        raw = await self.store.get(key)
        if raw is None:
            return {}
        try:
            saved = orjson.loads(raw)
            if not isinstance(saved, dict):
                raise ValueError("not a mapping of peers")
        except ValueError as exc:
            log.warning("persisted %s cannot be read and are dropped: %s", what, exc)
            return {}
        return saved

    async def persist_routes(self) -> None:
        """Save what peers told us, so a restarted node routes before links are back."""
        if self._saved_routes == self.table.version:
            return
        version = self.table.version
        snapshot = {p: [i.to_json() for i in items] for p, items in self.table.learned().items()}
        await self.store.put(_ROUTES_KEY, orjson.dumps(snapshot))
        reach = {p: [list(path) for path in paths] for p, paths in self.table.reach().items()}
        await self.store.put(_REACH_KEY, orjson.dumps(reach))
        self._saved_routes = version

    async def _persist_routes(self) -> None:
        """Persist learned routes after they change; a failure is retried, never fatal.

        Runs under the supervisor: a failing store (a full disk) is logged once
        and retried with backoff, and links are never touched by it.
        """
        while True:
            if self._saved_routes == self.table.version:
                self._routes_dirty.clear()
                await self._routes_dirty.wait()
            await asyncio.sleep(ROUTE_SAVE_DELAY)
            await self.persist_routes()
            self.faults.clear("routes")

    async def _maintain(self) -> None:
        """Expire old outbox records, prune the dedup window, bound the dead letters."""
        limits = self.config.limits
        while True:
            await asyncio.sleep(self.maintenance_every)
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
            await self._bound_dead_letters()
            self.faults.clear("maintenance")

    async def _bound_dead_letters(self) -> None:
        bounds = self.config.dlq
        by_age, by_size = await self.store.prune_dead_letters(bounds.max_bytes, bounds.max_age)
        for reason, n, bound in (
            ("max_age", by_age, f"older than {bounds.max_age:g} s"),
            ("max_bytes", by_size, f"beyond {bounds.max_bytes} bytes"),
        ):
            if n:
                self.metrics.inc("mesh_dead_letters_evicted_total", n, reason=reason)
                log.warning("dead-letter queue: evicted %d entries %s (dlq.%s)", n, bound, reason)

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

    def broker_connected(self, name: str) -> bool:
        event = self._ready.get(name)
        return event is not None and event.is_set()

    def _brokers_connecting(self) -> list[str]:
        return [n for n, e in self._ready.items() if not e.is_set()]

    def _tls_failed(self, client: str, exc: BaseException) -> None:
        """A TLS handshake at the listener failed: counted, logged (repeats summed)."""
        label = handshake_label(exc)
        self.metrics.inc("mesh_tls_handshake_failures_total", reason=label)
        why = ssl_detail(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
        # One fault key for every client, so many addresses cannot grow the table.
        self.faults.report("tls", MeshError(f"TLS handshake from {client} failed: {why}"))

    def _http_refused(self, reason: str, detail: str) -> None:
        """An HTTP connection or request refused by a limit: counted, logged (repeats summed)."""
        self.metrics.inc("mesh_http_refused_total", reason=reason)
        self.faults.report(f"http[{reason}]", MeshError(detail), what="refused")

    def _refused(self, peer: str, reason: str) -> None:
        self.refusals[peer] = reason

    def routes_changed(self) -> None:
        for s in self.sessions.values():
            s.changed.set()
        self._routes_dirty.set()

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

    async def _bridge_session(self, name: str) -> None:
        """One connection to broker ``name``: connect, feed ingress until it is lost.

        Raises what ended it (BrokerUnavailable when the connection is lost);
        the supervisor reports it once and reconnects with backoff.
        """
        assert self._scope is not None
        cfg = self.config.brokers[name]
        spec = self.specs[cfg.kind]
        task = f"bridge[{name}]"
        inbox = Inbox(name)
        scope = self._scope.child(f"{task}.")
        ctx = BridgeContext(
            broker=name,
            node_id=self.node_id,
            inbox=inbox,
            tasks=scope,
            metrics=self.metrics,
            max_event_size=self.config.limits.max_event_size,
            http=self.http,
        )
        bridge = spec.factory(cfg, ctx)
        try:
            await bridge.connect(_subscriptions(self.config, name))
            self._bridges[name] = bridge
            self._ready[name].set()
            self.faults.clear(task)
            log.info("broker %s connected", name, extra={"broker": name})
            await self._ingress_loop(name, inbox)
        finally:
            self._ready[name].clear()
            if self._bridges.get(name) is bridge:
                del self._bridges[name]
            # What this session received but did not take is refused now: an
            # HTTP client gets 503 at once instead of waiting for an answer
            # that would never come; a broker redelivers after the reconnect.
            await _refuse(inbox.take_all(), f"broker {name}: the connection is restarting")
            await self._close_bridge(bridge)
            await scope.aclose()

    async def _close_bridge(self, bridge: Bridge) -> None:
        try:
            await bridge.close()
        except Exception as exc:  # closing is best effort; the connection is gone anyway
            log.debug("closing a bridge failed: %s", exc)

    async def _ingress_loop(self, name: str, inbox: Inbox) -> None:
        while not self._stopping.is_set():
            batch = await inbox.take(INGRESS_BATCH)
            if self._stopping.is_set():
                for d in batch:
                    await d.nack(Overloaded("the node is stopping"))
                return
            async with self._drain.work():
                try:
                    await self.ingress.accept(name, batch, self.router.wait, self._stopping)
                except Exception:
                    # Not Overloaded (accept waits those out): a store error, say.
                    # Nothing of the batch was acknowledged; refuse it, and let the
                    # supervisor report the error once and reconnect, after which the
                    # broker redelivers.
                    await _refuse(batch, f"broker {name}: the node could not take the batch")
                    raise

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
                    "protocol": s.version if s else None,
                    "since": s.since if s else None,
                    "sent": s.sent if s else 0,
                    "received": s.received if s else 0,
                    "outbox": box.depth if box else 0,
                    "canary_ok": s.canary_ok() if s else False,
                    "rtt": round(s.rtt, 6) if s and s.rtt is not None else None,
                    "import": _describe(self.table.import_rules(p)),
                    "export": _describe(self.table.export_rules(p)),
                    "behind": sorted(self.table.behind(p)),
                }
            )
        return out

    def readiness(self) -> list[dict[str, str]]:
        """Why this node is not ready, one entry per component; empty when it is.

        Ready: every broker connected, every configured peer linked with a
        passing canary, the store able to commit, no outbox at its bound.
        """
        reasons: list[dict[str, str]] = []
        for name in self.config.brokers:
            if not self.broker_connected(name):
                why = self.faults.last(f"bridge[{name}]") or "connecting"
                reasons.append({"component": f"broker:{name}", "reason": why})
        for peer in self.config.peers:
            if peer.id not in self.sessions:
                why = (
                    self.refusals.get(peer.id)
                    or self.faults.last(f"link[{peer.id}]")
                    or "not linked yet"
                )
                reasons.append({"component": f"peer:{peer.id}", "reason": why})
            elif not self.sessions[peer.id].canary_ok():
                silent = self.sessions[peer.id].canary_silence()
                why = f"degraded: no canary answered for {silent:.0f} s"
                reasons.append({"component": f"peer:{peer.id}", "reason": why})
        if self.store.full:
            reasons.append(
                {"component": "store", "reason": "the disk is full: new events wait for room"}
            )
        for box in self.outboxes.all():
            bound = box.policy.max_bytes
            if bound and box.bytes >= bound:
                reasons.append(
                    {
                        "component": f"outbox:{box.name}",
                        "reason": f"{box.bytes} bytes queued, at its bound of {bound}",
                    }
                )
        return reasons

    def status(self) -> dict[str, Any]:
        """Readiness and the state behind it, for ``/api/status`` and the CLI."""
        reasons = self.readiness()
        return {
            "node": self.node_id,
            "region": self.region,
            "ready": not reasons,
            "reasons": reasons,
            "uptime": round(time.time() - self.started, 3),
            "brokers": {
                n: {
                    "up": self.broker_connected(n),
                    "reason": None
                    if self.broker_connected(n)
                    else self.faults.last(f"bridge[{n}]"),
                }
                for n in self.config.brokers
            },
            "peers": self.peers(),
            "store_full": self.store.full,
            "outboxes": [
                {
                    "name": ob.name,
                    "depth": ob.depth,
                    "bytes": ob.bytes,
                    "bound": ob.policy.max_bytes,
                }
                for ob in self.outboxes.all()
            ],
            "ingress": {
                n: self.metrics.get("mesh_ingress_events_total", broker=n)
                for n in self.config.brokers
            },
            "egress": [
                {
                    "name": w.rule.name,
                    "to": w.rule.broker,
                    "topic": w.rule.pattern.text,
                    "delivered": self.metrics.get("mesh_egress_events_total", egress=w.rule.name),
                    "outbox": w.outbox.depth,
                    "paused": w.paused is not None,
                }
                for w in self.egress_workers()
            ],
            "topology": self.topology(),
        }

    def topology(self) -> dict[str, Any]:
        """The mesh as this node knows it: the nodes its table reaches and the links between.

        Built from the peers (up or configured) and the paths announced behind them
        (reach and interest paths, origin first and the neighbour last).
        """
        me = self.node_id
        nodes: dict[str, dict[str, Any]] = {me: {"id": me, "self": True}}
        links: dict[tuple[str, str], dict[str, Any]] = {}

        def link(a: str, b: str, up: bool | None) -> None:
            key = (a, b) if a < b else (b, a)
            for n in key:
                nodes.setdefault(n, {"id": n, "self": False})
            known = links.get(key)
            if known is None or (up and not known["up"]):
                links[key] = {"a": key[0], "b": key[1], "up": up}

        for p in self.peers():
            link(me, p["id"], p["state"] == "up")
        paths: list[tuple[str, ...]] = []
        for peer_paths in self.table.reach().values():
            paths.extend(peer_paths)
        for r in self.table.routes():
            paths.append(tuple(r.path))
        for path in paths:
            for a, b in itertools.pairwise(path):
                if me not in (a, b):
                    link(a, b, None)  # known from announcements; its state is the others'
        ordered = sorted(nodes.values(), key=lambda n: str(n["id"]))
        return {"nodes": ordered, "links": list(links.values())}

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "region": self.region,
            "uptime": round(time.time() - self.started, 3),
            "brokers": {n: self.broker_connected(n) for n in self.config.brokers},
            "peers": self.peers(),
            "interests_looped": self.table.looped,
            "outboxes": [
                {"name": ob.name, "depth": ob.depth, "bytes": ob.bytes}
                for ob in self.outboxes.all()
            ],
            "metrics": self.metrics.snapshot(),
        }


def _describe(rules: TopicRules | None) -> list[Any]:
    if rules is None:
        return ["#"]
    return [
        e.pattern.text if e.filter is None else {"topic": e.pattern.text, "filter": e.filter}
        for e in rules.entries
    ]


def _connection(peer: Peer) -> tuple[object, ...]:
    """What a link to ``peer`` was made with: a change means dialling again.

    Rules and outbox settings apply to the running link, so changing them keeps it.
    """
    return (peer.id, peer.url, peer.token, peer.tls)


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


def _egress_key(rule: EgressRule) -> str:
    return f"egress:{rule.name}"


def _subscription(rule: EgressRule) -> tuple[str, str, str]:
    return (rule.broker, rule.pattern.text, canonical(rule.filter) if rule.filter else "")


def _legacy_egress_keys(rules: list[EgressRule]) -> list[str]:
    """The outbox names before egress names: the subscription, numbered if repeated."""
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


async def _refuse(deliveries: Sequence[Delivery], reason: str) -> None:
    """Refuse deliveries the node will not take (a refusal never raises)."""
    for d in deliveries:
        try:
            await d.nack(Overloaded(reason))
        except Exception as exc:  # the connection behind it may be gone already
            log.debug("refusing a delivery failed: %s", exc)
