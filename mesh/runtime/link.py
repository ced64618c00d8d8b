"""Peer links: one WebSocket per pair of nodes, at ``/mesh``.

Control frames are JSON text (built and parsed in :mod:`mesh.core.frames`);
event batches are binary (:mod:`mesh.core.envelope`).

1. The dialer sends a hello (node, region, the versions it speaks, token).
   The acceptor checks node id and token, picks the newest version both
   speak and answers ``welcome``, or ``refused`` with a reason and closes.
2. Each side sends its full interest table (``{"type": "interests", "full":
   true, "add": [...]}``), then only changes (``add`` / ``remove``), and a
   ``{"type": "credit", "events": N}`` grant: how many events the other side
   may have in flight to it. Interests are validated one by one; refused
   ones are counted (``mesh_interests_refused_total{peer,reason}``) and, from
   version 2 on, reported back in a ``notice``.
3. Events travel as binary batch frames with a per-session sequence number.
   The receiver routes a batch into its own durable outboxes, then answers
   ``{"type": "ack", "seq", "credit"}``, acknowledging every batch up to
   ``seq`` and returning credit. While it cannot commit (an outbox or the
   disk is full) it neither acknowledges nor grants credit, and the link
   stays up: the sender simply runs out of credit. A peer that sends more
   than its credit, or a malformed frame, has its link closed with the reason.
   From version 4 each side sends a canary every ``node.canary_interval``
   seconds. The receiver queues it behind the batches it holds, commits it to
   its store like an event, and only then answers ``canary-ok``: the round
   trip is ``mesh_link_rtt_seconds``, and no answer for three intervals marks
   the link degraded (``mesh_link_canary_ok`` 0, ``/readyz``) while its socket
   may still be open: a peer whose disk is full or whose loop is stuck.
   Also from version 4, each side sends its event catalog every
   ``CATALOG_EVERY`` seconds when it changed (``{"type": "catalog", "entries":
   [...]}``, within our export for the peer, :mod:`mesh.core.catalog`); bad
   entries are refused and counted (``mesh_catalog_refused_total``), never fatal.

4. Per-peer rules and origins. Every event from the peer must be within our
   ``import`` for it (else dropped, acknowledged and counted in
   ``mesh_link_denied_events_total{peer,direction="import"}``) and must come
   from the peer or a node it announced behind it (version 3 ``reach``, or the
   paths of its interests; else ``mesh_link_forged_events_total{peer,
   reason="origin"}``). Events queued for the peer outside our ``export`` for
   it (the rules changed since) are dropped at send, ``direction="export"``.

A link's faults never leave it: the dialer runs under the node's supervisor
(reconnecting with backoff), an accepted link is supervised in its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp._websocket.reader import WebSocketReader

from mesh.config import AcceptPeer, Limits, Peer
from mesh.core import frames
from mesh.core.catalog import Catalog
from mesh.core.certs import identity_mismatch
from mesh.core.envelope import (
    Envelope,
    decode_batch_frame,
    decode_record,
    encode_batch_frame,
    without_ingress_time,
)
from mesh.core.errors import (
    EventError,
    EventTooLarge,
    LinkError,
    LinkProtocolError,
    LinkRefused,
    Overloaded,
    StoreError,
)
from mesh.core.event import validate_attributes
from mesh.core.routing import Interest, RoutingTable
from mesh.runtime.lifecycle import Faults, cancel_and_wait, supervise
from mesh.runtime.logs import Throttle
from mesh.runtime.metrics import Metrics
from mesh.runtime.router import Router
from mesh.runtime.store import DeadLetter
from mesh.runtime.tls import client_context

if TYPE_CHECKING:
    from mesh.runtime.tracing import Spans

__all__ = ["LinkHost", "LinkSession", "accept_link", "dial_once", "token_refusal"]

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 10.0
HEARTBEAT = 5.0
BEACON = HEARTBEAT / 2  # a no-op control frame, so an idle link still shows it is alive
STALE_AFTER = HEARTBEAT  # two beacons missed: a new hello for the id may take the session over
MAX_FRAME = 64 << 20
CLOSE_REFUSED = 4001
CLOSE_PROTOCOL = 4002
_BATCH_HEADER = 13  # tag, seq, count (see mesh.core.envelope)
LOG_EVERY = 5.0  # seconds between log lines of one kind of drop on one link
_MAX_CANARIES_WAITING = 4  # canaries a peer may have queued behind its batches
CATALOG_EVERY = 10.0  # seconds between catalog frames (each only when it changed)


class LinkHost(Protocol):
    """What a link needs from its node."""

    node_id: str
    region: str
    table: RoutingTable
    router: Router
    metrics: Metrics
    faults: Faults
    limits: Limits
    sessions: dict[str, LinkSession]
    accept: list[AcceptPeer]
    dialing: set[str]
    link_versions: tuple[int, int]
    pending_hellos: int
    canary_interval: float
    spans: Spans | None
    catalog: Catalog

    def routes_changed(self) -> None: ...

    def apply_rules(self, peer: str) -> None: ...


_WS = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class _Closed(Exception):
    pass


class LinkSession:
    """An established link with one peer: interests, batches, acks and credit."""

    def __init__(
        self, host: LinkHost, peer: str, region: str, ws: _WS, *, dialed: bool, version: int = 1
    ) -> None:
        self.host = host
        self.peer = peer
        self.region = region
        self.ws = ws
        self.dialed = dialed
        self.version = version
        self.since = time.time()
        self.credit = 0  # events we may still send to the peer
        self.allowed = host.limits.link_credit  # events the peer may still send to us
        self._credit_ok = asyncio.Event()
        self._inflight: dict[int, list[int]] = {}
        self.changed = asyncio.Event()
        self.changed.set()
        self.sent = 0
        self.received = 0
        self.token: str | None = None  # the token an accepted peer linked with
        self.certificate: bytes | None = None  # its verified client certificate (DER)
        self.last_seen = time.monotonic()  # any frame from the peer, beacons included
        self._task: asyncio.Task[None] | None = None
        # Batches wait here so acks and interests keep flowing while one is routed;
        # the credit we granted bounds it (enforced in _reader).
        # Canaries (their sequence numbers) wait in the same line as batches.
        self._batches: asyncio.Queue[bytes | int] = asyncio.Queue()
        self._canaries_waiting = 0
        self._canary_seq = 0
        self._canary_sent: dict[int, float] = {}  # seq -> monotonic time sent
        self.canary_ok_at = time.monotonic()  # a new link has three intervals of grace
        self.rtt: float | None = None  # seconds, the last canary's round trip
        self._degraded = False
        self._sent_interests: dict[Any, Interest] = {}
        self._sent_reach: list[tuple[str, ...]] | None = None
        self._advertised_once = False
        self._advertising = asyncio.Lock()
        self._throttle = Throttle(LOG_EVERY)  # drop lines, one per kind every LOG_EVERY

    async def run(self) -> None:
        """Run the link until it drops; raises what broke it (LinkError and others)."""
        host, peer = self.host, self.peer
        old = host.sessions.get(peer)
        if old is not None:
            await old.close()
        host.sessions[peer] = self
        self._task = asyncio.current_task()
        host.apply_rules(peer)  # an id admitted by accept '*' gets that entry's rules
        host.table.link_state(peer, True)
        host.routes_changed()
        host.metrics.inc("mesh_link_sessions_total", peer=peer)
        host.faults.clear(f"link[{peer}]")
        log.info(
            "link %s up (%s, protocol %d)",
            peer,
            "dialed" if self.dialed else "accepted",
            self.version,
            extra={"peer": peer},
        )
        box = await host.router.peer_box(peer)
        box.rewind()
        if self.version < 3:
            log.info(
                "link %s speaks protocol %d, which announces no reach: events are accepted "
                "only from it and the nodes on its interests' paths",
                peer,
                self.version,
                extra={"peer": peer},
            )
        try:
            await self.ws.send_str(frames.dump({"type": "credit", "events": self.allowed}))
            # Our interests and reach go out before any batch, so the peer knows the
            # origins we speak for before the first event that needs them.
            await self._advertise()
            await _run_all(
                {
                    "reader": self._reader(),
                    "receiver": self._receiver(),
                    "sender": self._sender(),
                    "advertiser": self._advertiser(),
                    "beacon": self._beacon(),
                    **(
                        {"canary": self._canaries(), "catalog": self._catalog()}
                        if self.version >= 4
                        else {}
                    ),
                },
                f"link[{peer}]",
            )
        except LinkProtocolError as exc:
            host.metrics.inc("mesh_link_protocol_errors_total", peer=peer)
            with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
                await self.ws.close(code=CLOSE_PROTOCOL, message=exc.reason[:120].encode())
            raise
        except ConnectionResetError as exc:
            # A send racing the peer's close (aiohttp's ClientConnectionResetError is one):
            # the connection is gone, which is the link's fault, not the node's.
            raise LinkError(peer, f"connection lost: {exc or type(exc).__name__}") from exc
        finally:
            box.rewind()
            if host.sessions.get(peer) is self:
                del host.sessions[peer]
                host.catalog.forget(peer)
                host.table.link_state(peer, False)
                host.routes_changed()
            with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
                await self.ws.close()
            log.info("link %s down", peer, extra={"peer": peer})

    def alive(self) -> bool:
        """True while the peer has sent something within ``STALE_AFTER`` seconds."""
        return time.monotonic() - self.last_seen < STALE_AFTER

    def canary_ok(self) -> bool:
        """Whether the peer answered a canary within the last three intervals.

        A peer older than version 4 has no canaries: it is as good as its beacons.
        """
        if self.version < 4:
            return self.alive()
        return time.monotonic() - self.canary_ok_at < 3 * self.host.canary_interval

    def canary_silence(self) -> float:
        """Seconds since the last canary answer (or since the link came up)."""
        return time.monotonic() - self.canary_ok_at

    async def close(self) -> None:
        task = self._task
        with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
            await self.ws.close()
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task])

    # -- tasks ---------------------------------------------------------------------

    async def _reader(self) -> None:
        ws = self.ws
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.last_seen = time.monotonic()
                self._take_batch(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.last_seen = time.monotonic()
                await self._on_control(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                raise _Closed()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise LinkError(self.peer, f"websocket error: {ws.exception()}")

    def _take_batch(self, frame: bytes) -> None:
        """Queue a batch frame, after checking the peer stays within its credit."""
        if len(frame) < _BATCH_HEADER:
            raise LinkProtocolError(self.peer, f"batch frame of {len(frame)} bytes is truncated")
        count = int.from_bytes(frame[9:13], "big")
        if count > self.allowed:
            raise LinkProtocolError(
                self.peer, f"peer sent {count} events with credit for {self.allowed}"
            )
        # What waits here is bounded by credit, in events and in frames: a batch
        # carries at least one event, or nothing at all (an empty one is a probe).
        if count == 0 and len(frame) != _BATCH_HEADER:
            raise LinkProtocolError(
                self.peer, f"empty batch frame of {len(frame)} bytes, not {_BATCH_HEADER}"
            )
        limits = self.host.limits
        if self._batches.qsize() >= limits.link_credit:
            raise LinkProtocolError(
                self.peer, f"more than {limits.link_credit} batches waiting for their ack"
            )
        self.allowed -= count
        self._batches.put_nowait(frame)

    async def _on_control(self, text: str) -> None:
        frame = frames.parse_control(text, self.peer)
        host = self.host
        if isinstance(frame, frames.Ack):
            done: list[int] = []
            for s in [s for s in self._inflight if s <= frame.seq]:
                done.extend(self._inflight.pop(s))
            box = await host.router.peer_box(self.peer)
            await box.ack(done)
            self._grant(frame.credit if frame.credit >= 0 else len(done))
        elif isinstance(frame, frames.Credit):
            self._grant(frame.events)
        elif isinstance(frame, frames.Interests):
            await self._on_interests(frame)
        elif isinstance(frame, frames.Canary):
            # Bounded: a peer may have a few canaries waiting behind its batches; more
            # go unanswered, which is what a peer flooding canaries deserves.
            if self._canaries_waiting < _MAX_CANARIES_WAITING:
                self._canaries_waiting += 1
                self._batches.put_nowait(frame.seq)
        elif isinstance(frame, frames.CanaryOk):
            self._on_canary_ok(frame.seq)
        elif isinstance(frame, frames.CatalogEntries):
            self._on_catalog(frame)
        elif isinstance(frame, frames.Notice):
            log.warning(
                "link %s: the peer refused %d of our interests, first: %s",
                self.peer,
                len(frame.refused),
                frame.refused[0] if frame.refused else "-",
                extra={"peer": self.peer},
            )
        else:
            log.debug("link %s: ignoring control frame %r", self.peer, frame.type)

    async def _on_interests(self, frame: frames.Interests) -> None:
        host, peer = self.host, self.peer
        if frame.full:
            installed = host.table.replace_learned(peer, frame.add)
        else:
            installed = host.table.update_learned(peer, frame.add, frame.remove)
        # Refused in the frame (malformed, bad paths), then by the table (a path through
        # us, outside our export, over the limit), then reach paths through us.
        refused = list(frame.refused)
        refused += [
            frames.InterestRefused(r.code, r.detail, r.interest.origin, r.interest.pattern)
            for r in installed
        ]
        if frame.reach is not None and self.version >= 3:
            refused += [
                frames.InterestRefused("path", why)
                for why in host.table.set_reach(peer, frame.reach)
            ]
        if refused:
            for r in refused:
                host.metrics.inc("mesh_interests_refused_total", peer=peer, reason=r.code)
            reasons = list(dict.fromkeys(r.detail for r in refused))
            self._log_drop(
                "interests", "refused %d interests: %s", len(refused), "; ".join(reasons[:3])
            )
            if self.version >= 2:
                notice = [r.to_json() for r in refused[:100]]
                await self.ws.send_str(frames.dump({"type": "notice", "refused": notice}))
        host.routes_changed()

    def _on_catalog(self, frame: frames.CatalogEntries) -> None:
        """Take the peer's catalog entries; refused ones are counted, never fatal."""
        self.host.catalog.learn(self.peer, frame.entries)
        if frame.refused:
            for code, _detail in frame.refused:
                self.host.metrics.inc("mesh_catalog_refused_total", peer=self.peer, reason=code)
            first = frame.refused[0][1]
            self._log_drop(
                "catalog", "refused %d catalog entries, first: %s", len(frame.refused), first
            )

    async def _catalog(self) -> None:
        """Every CATALOG_EVERY seconds, our catalog within our export for the peer, if changed."""
        sent: list[dict[str, Any]] | None = None
        while True:
            entries = self.host.catalog.share(self.peer, self.host.table.export_rules(self.peer))
            if entries != sent:
                await self.ws.send_str(frames.dump({"type": "catalog", "entries": entries}))
                sent = entries
            await asyncio.sleep(CATALOG_EVERY)

    def _grant(self, n: int) -> None:
        self.credit += n
        if self.credit > 0:
            self._credit_ok.set()

    async def _receiver(self) -> None:
        while True:
            items = [await self._batches.get()]
            while not self._batches.empty():
                items.append(self._batches.get_nowait())
            run: list[bytes] = []
            for item in items:
                if isinstance(item, int):
                    # A canary is answered only after every batch before it is in.
                    if run:
                        await self._on_batches(run)
                        run = []
                    await self._on_canary(item)
                else:
                    run.append(item)
            if run:
                await self._on_batches(run)

    async def _on_canary(self, seq: int) -> None:
        """Commit the peer's canary to our store as an event would be, then answer it."""
        self._canaries_waiting -= 1
        try:
            await self.host.router.canary(self.peer, seq)
        except Overloaded as exc:
            # The disk is full: no answer, and the peer sees this link degraded.
            log.debug("link %s: canary %d not answered: %s", self.peer, seq, exc)
            return
        except (StoreError, OSError) as exc:
            # The store cannot commit: the same answer (none), not a closed link.
            self._log_drop("canary", "canary %d not answered: the store failed: %s", seq, exc)
            return
        await self.ws.send_str(frames.dump({"type": "canary-ok", "seq": seq}))

    async def _canaries(self) -> None:
        while True:
            self._canary_seq += 1
            self._canary_sent[self._canary_seq] = time.monotonic()
            while len(self._canary_sent) > 2 * _MAX_CANARIES_WAITING:
                del self._canary_sent[min(self._canary_sent)]
            await self.ws.send_str(frames.dump({"type": "canary", "seq": self._canary_seq}))
            await asyncio.sleep(self.host.canary_interval)
            self._check_degraded()

    def _on_canary_ok(self, seq: int) -> None:
        sent = self._canary_sent.pop(seq, None)
        if sent is None:
            return  # a late answer to a canary we stopped waiting for
        for s in [s for s in self._canary_sent if s < seq]:
            del self._canary_sent[s]
        now = time.monotonic()
        self.rtt = now - sent
        self.canary_ok_at = now
        self.host.metrics.observe("mesh_link_rtt_seconds", self.rtt, peer=self.peer)
        self._check_degraded()

    def _check_degraded(self) -> None:
        ok = self.canary_ok()
        if not ok and not self._degraded:
            self._degraded = True
            self.host.metrics.inc("mesh_link_degraded_total", peer=self.peer)
            log.warning(
                "link %s degraded: no canary answered for %.0f s (its store or loop is stuck, "
                "or the path is)",
                self.peer,
                self.canary_silence(),
                extra={"peer": self.peer},
            )
        elif ok and self._degraded:
            self._degraded = False
            log.info("link %s: canaries answered again", self.peer, extra={"peer": self.peer})

    async def _on_batches(self, batch_frames: list[bytes]) -> None:
        """Route every batch waiting, in one commit, then acknowledge the last one.

        Coalescing matters: a commit costs a round trip to the store thread, so
        routing batches one by one caps a link at a few hundred batches a second.
        """
        host = self.host
        envs = []
        dead = []
        count = 0
        seq = 0
        for frame in batch_frames:
            try:
                seq, records = decode_batch_frame(frame)
            except LinkProtocolError as exc:  # the core does not know the peer's name
                raise LinkProtocolError(self.peer, exc.reason) from None
            count += len(records)
            max_size = host.limits.max_event_size
            for rec in records:
                try:
                    env = decode_record(rec)
                    # Stored only if it is a valid event, as if a client had sent it.
                    validate_attributes(env.event.attrs)
                    if (size := env.event.size()) > max_size:
                        raise EventTooLarge(size, max_size)
                    if self._admit(env):
                        envs.append(env)
                except (LinkProtocolError, EventError) as exc:
                    dead.append(
                        DeadLetter(
                            exc.reason,
                            f"link:{self.peer}",
                            "message",
                            bytes(rec),
                            {"peer": self.peer, "batch": seq},
                        )
                    )
        while True:
            try:
                if dead:
                    await host.router.outboxes.store.dead_letter(dead)
                    host.metrics.inc(
                        "mesh_dead_letters_total", len(dead), reason="malformed record"
                    )
                    log.error(
                        "link %s: dead-lettered %d malformed records, first: %s",
                        self.peer,
                        len(dead),
                        dead[0].reason,
                    )
                    dead = []
                if envs:
                    began = time.time()
                    await host.router.route(envs, from_peer=self.peer)
                    if host.spans is not None:
                        host.spans.record("process", envs, system="mesh", start=began)
                break
            except Overloaded as exc:
                # Not acknowledged, so the peer's credit runs out and it stops sending:
                # backpressure travels upstream hop by hop, and the link stays up.
                await host.router.wait(exc)
        self.received += count
        host.metrics.inc("mesh_link_received_events_total", count, peer=self.peer)
        # Acks are cumulative: the last batch's sequence number covers them all.
        self.allowed += count
        await self.ws.send_str(frames.dump({"type": "ack", "seq": seq, "credit": count}))

    def _admit(self, env: Envelope) -> bool:
        """Whether an event from the peer may enter: its origin and our import for the peer."""
        table, peer = self.host.table, self.peer
        if env.origin != peer and env.origin not in table.behind(peer):
            self.host.metrics.inc("mesh_link_forged_events_total", peer=peer, reason="origin")
            self._log_drop(
                "forged",
                "dropped event %s from origin %r, which %s has not announced behind it (topic %s)",
                env.event.attrs.get("id"),
                env.origin,
                peer,
                env.topic,
            )
            return False
        rules = table.import_rules(peer)
        if rules is not None and not rules.allows(tuple(env.topic.split("/")), env.event.attrs):
            self.host.metrics.inc("mesh_link_denied_events_total", peer=peer, direction="import")
            why = "dropped event %s on %s: outside our import (%s)"
            self._log_drop("import", why, env.event.attrs.get("id"), env.topic, rules.describe())
            return False
        return True

    def _log_drop(self, kind: str, msg: str, *args: Any) -> None:
        """Log a deliberate drop, at most once per LOG_EVERY seconds per kind (and say how many)."""
        suppressed = self._throttle.allow(kind)
        if suppressed is None:
            return
        more = f" (and {suppressed} more since)" if suppressed else ""
        log.warning(f"link %s: {msg}{more}", self.peer, *args, extra={"peer": self.peer})

    async def _sender(self) -> None:
        host = self.host
        box = await host.router.peer_box(self.peer)
        batch_size = host.limits.batch_size
        seq = 0
        while True:
            await self._credit_ok.wait()
            records = await box.read(min(batch_size, self.credit))
            if self.changed.is_set():
                # Routes or reach changed (a node appeared behind us, say): the peer
                # hears of it before it gets events that depend on it.
                await self._advertise()
            rules = host.table.export_rules(self.peer)
            if rules is not None:
                records = await self._within_export(box, records, rules)
                if not records:
                    continue
            seq += 1
            self._inflight[seq] = [s for s, _ in records]
            self.credit -= len(records)
            if self.credit <= 0:
                self._credit_ok.clear()
            payload = [r for _, r in records]
            if self.version < 4:  # an older peer reads six header fields, not seven
                payload = [without_ingress_time(r) for r in payload]
            await self.ws.send_bytes(encode_batch_frame(seq, payload))
            self.sent += len(records)
            host.metrics.inc("mesh_link_sent_events_total", len(records), peer=self.peer)

    async def _beacon(self) -> None:
        # Pongs are consumed inside aiohttp, so an idle link would look silent: a
        # zero grant every BEACON seconds is a frame every protocol version ignores.
        beat = frames.dump({"type": "credit", "events": 0})
        while True:
            await asyncio.sleep(BEACON)
            await self.ws.send_str(beat)

    async def _within_export(
        self, box: Any, records: list[tuple[int, bytes]], rules: Any
    ) -> list[tuple[int, bytes]]:
        """Drop (acknowledge) queued records outside our export for the peer."""
        keep: list[tuple[int, bytes]] = []
        denied: list[int] = []
        for s, rec in records:
            try:
                env = decode_record(rec)
            except (LinkProtocolError, EventError):
                keep.append((s, rec))  # the receiver dead-letters what it cannot read
                continue
            if rules.allows(tuple(env.topic.split("/")), env.event.attrs):
                keep.append((s, rec))
            else:
                denied.append(s)
        if denied:
            await box.ack(denied)
            self.host.metrics.inc(
                "mesh_link_denied_events_total", len(denied), peer=self.peer, direction="export"
            )
            self._log_drop(
                "export",
                "dropped %d queued events outside our export (%s)",
                len(denied),
                rules.describe(),
            )
        return keep

    async def _advertiser(self) -> None:
        while True:
            await self.changed.wait()
            await self._advertise()

    async def _advertise(self) -> None:
        """Tell the peer what changed in our interests (and, from version 3, our reach)."""
        async with self._advertising:
            self.changed.clear()
            table = self.host.table
            first = not self._advertised_once
            sent = self._sent_interests
            now = table.advertised_to(self.peer)
            add = [i.to_json() for k, i in now.items() if sent.get(k) != i]
            remove = [i.to_json() for k, i in sent.items() if k not in now]
            msg: dict[str, Any] = {"type": "interests", "full": first, "add": add, "remove": remove}
            if self.version >= 3:
                reach = table.reach_to(self.peer)
                if reach != self._sent_reach:
                    msg["reach"] = [list(p) for p in reach]
                    self._sent_reach = reach
            if first or add or remove or "reach" in msg:
                await self.ws.send_str(frames.dump(msg))
            self._advertised_once = True
            self._sent_interests = now


async def _run_all(coros: dict[str, Any], name: str) -> None:
    """Run the session's tasks until one ends; re-raise what it raised (not a group)."""
    tasks = [asyncio.create_task(c, name=f"{name}.{n}") for n, c in coros.items()]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
    # Every task's outcome is retrieved; the first to end says why the link ended.
    errors = [t.exception() for t in tasks if not t.cancelled()]
    first = [t.exception() for t in done if not t.cancelled()]
    for exc in first + errors:
        if exc is not None and not isinstance(exc, _Closed):
            raise exc


# -- handshake ---------------------------------------------------------------------


def token_refusal(accept: list[AcceptPeer], node: str, token: str) -> str | None:
    """Why ``accept`` does not admit ``node`` holding ``token``, or None if it does.

    Asked at the hello and again at every reload, so a rotated or withdrawn
    token closes the links it had admitted.
    """
    # An id with an entry of its own is claimed with that entry's token only:
    # a wildcard entry's token cannot speak for it.
    candidates = [a for a in accept if a.id == node] or [a for a in accept if a.id == "*"]
    if not candidates:
        return f"node {node!r} is not allowed to connect (not in accept)"
    given = token.encode()
    # Every candidate is compared (constant time each, no early exit).
    matches = [hmac.compare_digest(a.token.get_secret_value().encode(), given) for a in candidates]
    if not any(matches):
        return f"wrong token for node {node!r}"
    return None


def _check_hello(
    host: LinkHost, hello: frames.Hello | str, peercert: dict[str, Any] | None = None
) -> str | None:
    """The reason to refuse this hello, or None to accept it.

    ``peercert`` is the connection's verified client certificate, if any
    (:meth:`ssl.SSLSocket.getpeercert`): it must name the node id claimed.
    """
    if isinstance(hello, str):
        return hello
    node = hello.node
    if frames.negotiate(hello.versions, host.link_versions) is None:
        lo, hi = host.link_versions
        return (
            f"protocol versions {hello.versions[0]}-{hello.versions[1]} are not supported "
            f"(this node speaks {lo}-{hi})"
        )
    if node == host.node_id:
        return f"node id {node!r} is this node's own id"
    if (refusal := token_refusal(host.accept, node, hello.token)) is not None:
        return refusal
    if (mismatch := identity_mismatch(peercert, node)) is not None:
        return mismatch
    if node in host.dialing and node in host.sessions and host.node_id < node:
        return f"duplicate link: {host.node_id} already dials {node}"
    # A claimed id already linked is refused, not swapped: a token holder cannot
    # take over a live site's link (and drain what is queued for it). A session that
    # has gone silent (a crashed machine, a cut cable) is replaced by the new one.
    current = host.sessions.get(node)
    if current is not None and current.alive():
        return (
            f"already linked: node {node!r} has a live link; a second one is refused "
            f"(a link silent for {STALE_AFTER:.0f}s is replaced)"
        )
    return None


async def accept_link(host: LinkHost, request: web.Request) -> web.StreamResponse:
    """The ``/mesh`` handler: check the hello, then run the session, supervised."""
    remote = request.remote or "?"
    most = host.limits.max_pending_hellos
    if host.pending_hellos >= most:
        # Unauthenticated connections are bounded: each may hold a frame of up to
        # MAX_FRAME bytes before its hello is read.
        host.metrics.inc("mesh_link_refused_total", reason="busy")
        host.faults.report(
            f"accept[{remote}]",
            LinkRefused(
                "?", f"busy: {most} connections are in their hello (limits.max_pending_hellos)"
            ),
            what="refused",
        )
        return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
    # Frames are small until the hello is accepted: an unauthenticated connection
    # cannot make the node buffer a batch-sized frame (aiohttp refuses a frame
    # from its header, before reading it).
    limits = host.limits
    # (aiohttp refuses a frame of max_msg_size bytes or more, hence the + 1.)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=limits.max_hello_size + 1)
    hello: frames.Hello | str
    host.pending_hellos += 1
    try:
        await ws.prepare(request)
        # One deadline for the whole hello: receive(timeout) starts again after
        # each ping, so a client pinging every few seconds would hold it open.
        async with asyncio.timeout(limits.hello_timeout):
            msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            hello = frames.parse_hello(msg.data)
        elif msg.type == aiohttp.WSMsgType.ERROR:
            hello = (
                f"oversized or malformed frame before the hello ({ws.exception()}; "
                f"limits.max_hello_size is {limits.max_hello_size})"
            )
        else:
            hello = f"expected a hello frame, got a {msg.type.name} frame"
    except TimeoutError:
        hello = f"no hello within {limits.hello_timeout:g}s (limits.hello_timeout)"
    finally:
        host.pending_hellos -= 1
    reason = _check_hello(host, hello, _peercert(request))
    if reason is not None or isinstance(hello, str):
        reason = reason or "expected a hello frame"
        who = hello.node if isinstance(hello, frames.Hello) else "?"
        host.faults.report(f"accept[{remote}]", LinkRefused(who, reason), what="refused")
        host.metrics.inc("mesh_link_refused_total", reason=reason.split(" ")[0])
        with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
            await ws.send_str(frames.dump({"type": "refused", "reason": reason}))
            await ws.close(code=CLOSE_REFUSED, message=b"refused")
        return ws
    version = frames.negotiate(hello.versions, host.link_versions) or 1
    _allow_batches(ws, request)
    await ws.send_str(
        frames.dump(
            {"type": "welcome", "node": host.node_id, "region": host.region, "version": version}
        )
    )
    session = LinkSession(host, hello.node, hello.region, ws, dialed=False, version=version)
    session.token = hello.token  # re-checked at every reload (token_refusal)
    session.certificate = _peercert_der(request)  # and this against a reloaded CA
    await supervise(f"link[{hello.node}]", session.run, faults=host.faults, restart=False)
    return ws


def _allow_batches(ws: web.WebSocketResponse, request: web.Request) -> None:
    """Raise the frame limit from ``limits.max_hello_size`` to MAX_FRAME, after the hello.

    aiohttp fixes a WebSocket's frame limit in its parser when the response is
    prepared, so the parser is replaced by one with the batch limit, reading
    into the same queue. The dialer sends nothing between its hello and our
    welcome, so no frame is half-read at this point. This reaches into aiohttp
    (the request protocol's parser): if that changes, the check below fails
    loudly (tests open every link through here) rather than keeping the small
    limit or buffering past it.
    """
    proto = request.protocol
    old = getattr(proto, "_payload_parser", None)
    queue = getattr(ws, "_reader", None)
    if not isinstance(old, WebSocketReader) or queue is None:
        raise RuntimeError("aiohttp's WebSocket internals changed: cannot raise the frame limit")
    new = WebSocketReader(
        queue,
        MAX_FRAME,
        compress=bool(getattr(ws, "_compress", False)),
        decode_text=getattr(ws, "_decode_text", True),
    )
    proto._payload_parser = new  # see the docstring
    if hasattr(ws, "_parser"):
        ws._parser = new  # the response owns its parser (aiohttp 3.13+)


def _peercert(request: web.Request) -> dict[str, Any] | None:
    """The client certificate the TLS handshake verified, or None (no TLS, no certificate).

    With ``client_auth: none`` the listener asks for none, so an empty one comes back.
    """
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    return cert if isinstance(cert, dict) and cert else None


def _peercert_der(request: web.Request) -> bytes | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der if isinstance(der, bytes) and der else None


async def _handshake(
    host: LinkHost, peer: Peer, ws: aiohttp.ClientWebSocketResponse
) -> frames.Welcome:
    await ws.send_str(
        frames.hello(host.node_id, host.region, peer.token.get_secret_value(), host.link_versions)
    )
    async with asyncio.timeout(HELLO_TIMEOUT):  # pings do not extend it
        msg = await ws.receive()
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise LinkError(peer.id, f"closed during the hello ({msg.type.name})")
    reply = frames.parse_welcome(msg.data, peer.id, host.link_versions)
    if isinstance(reply, str):
        raise LinkRefused(peer.id, reply)
    if reply.node != peer.id:
        raise LinkRefused(peer.id, f"the node at {peer.url} is {reply.node!r}, not {peer.id!r}")
    return reply


async def dial_once(
    host: LinkHost, peer: Peer, on_refused: Callable[[str], None] | None = None
) -> None:
    """Dial ``peer`` and run the link until it drops; raise why it ended."""
    timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_connect=5.0)
    tls: ssl.SSLContext | bool = True
    if peer.url.startswith("wss://"):
        # Built at each dial, so a reload's new files apply to the next one.
        try:
            tls = await asyncio.to_thread(client_context, peer.tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise LinkError(peer.id, f"cannot load the TLS files of peer {peer.id}: {exc}") from exc
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.ws_connect(peer.url, heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, ssl=tls) as ws,
        ):
            welcome = await _handshake(host, peer, ws)
            session = LinkSession(
                host, peer.id, welcome.region, ws, dialed=True, version=welcome.version
            )
            await session.run()
    except LinkRefused as exc:
        host.metrics.inc("mesh_link_refused_total", reason="by peer")
        if on_refused is not None:
            on_refused(exc.reason)
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        why = _tls_failure(exc)
        if why is None and isinstance(tls, ssl.SSLContext) and _disconnected(exc):
            why = await asyncio.to_thread(_tls_probe, peer.url, tls)
        if why is not None:
            raise LinkError(peer.id, f"TLS handshake with {peer.url} failed: {why}") from exc
        raise LinkError(
            peer.id, f"cannot connect to {peer.url}: {exc or type(exc).__name__}"
        ) from exc
    raise LinkError(peer.id, "the link was closed")


def _tls_failure(exc: BaseException) -> str | None:
    """What failed in TLS, if an SSL error is the exception or behind it."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError | aiohttp.ClientSSLError):
            return str(seen) or type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def _disconnected(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError)


def _tls_probe(url: str, ctx: ssl.SSLContext, timeout: float = 3.0) -> str | None:
    """Why the server at ``url`` ends a TLS session at once, or None if it does not.

    With TLS 1.3 a server checks the client certificate after the client's half
    of the handshake; an asyncio server that refuses it closes the connection,
    and aiohttp only says "Server disconnected". A blocking socket reads the
    alert when one is sent, else sees the session end before any answer to a
    request. Runs in a thread, only after such a disconnect.
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or 443
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as conn,
        ):
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            if conn.recv(1):
                return None
    except ssl.SSLError as exc:
        return str(exc)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except (OSError, ValueError):
        return None
    return (
        "the server ended the session right after the handshake: it refused this "
        "node's client certificate (not from its CA) or wanted one (peers[].tls.cert)"
    )
