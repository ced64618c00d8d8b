"""Peer links: one WebSocket per pair of nodes, at ``/mesh``.

Protocol (version 1). Control frames are JSON text; event batches are binary.

1. The dialer sends ``{"type": "hello", "node", "region", "version", "token"}``.
   The acceptor checks version, node id and the shared token, and answers
   ``{"type": "welcome", "node", "region", "version"}`` or
   ``{"type": "refused", "reason"}`` and closes. Nothing else is exchanged
   on a refused link; both sides log the reason.
2. Each side sends its full interest table (``{"type": "interests", "full":
   true, "add": [...]}``), then only changes (``add`` / ``remove``), and a
   ``{"type": "credit", "events": N}`` grant: how many events the other side
   may have in flight to it.
3. Events travel as binary batch frames (see :mod:`mesh.core.envelope`) with a
   per-session sequence number. The receiver routes a batch into its own
   durable outboxes, then answers ``{"type": "ack", "seq", "credit"}``,
   acknowledging every batch up to ``seq`` and returning credit. The sender
   deletes acknowledged events from its outbox; whatever is unacknowledged
   when a link drops is sent again on the next session (the destination's
   dedup by (source, id) absorbs the repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from mesh.config import AcceptPeer, Limits, Peer
from mesh.core.envelope import decode_batch_frame, decode_record, encode_batch_frame
from mesh.core.errors import Backpressure, LinkError, LinkProtocolError, LinkRefused
from mesh.core.routing import Interest, RoutingTable
from mesh.runtime.backoff import Backoff
from mesh.runtime.lifecycle import cancel_and_wait
from mesh.runtime.metrics import Metrics
from mesh.runtime.router import Router
from mesh.runtime.store import DeadLetter

__all__ = ["PROTOCOL_VERSION", "LinkHost", "LinkSession", "accept_link", "dial_forever"]

log = logging.getLogger(__name__)
PROTOCOL_VERSION = 1
HELLO_TIMEOUT = 10.0
HEARTBEAT = 5.0
CLOSE_REFUSED = 4001


class LinkHost(Protocol):
    """What a link needs from its node."""

    node_id: str
    region: str
    table: RoutingTable
    router: Router
    metrics: Metrics
    limits: Limits
    sessions: dict[str, LinkSession]
    accept: list[AcceptPeer]
    dialing: set[str]

    def routes_changed(self) -> None: ...

    async def persist_routes(self) -> None: ...


_WS = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _dump(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


class _Closed(Exception):
    pass


class LinkSession:
    """An established link with one peer: interests, batches, acks and credit."""

    def __init__(self, host: LinkHost, peer: str, region: str, ws: _WS, *, dialed: bool) -> None:
        self.host = host
        self.peer = peer
        self.region = region
        self.ws = ws
        self.dialed = dialed
        self.since = time.time()
        self.credit = 0
        self._credit_ok = asyncio.Event()
        self._inflight: dict[int, list[int]] = {}
        self.changed = asyncio.Event()
        self.changed.set()
        self.sent = 0
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        # Batches wait here so acks and interests keep flowing while one is routed;
        # the peer's credit bounds it.
        self._batches: asyncio.Queue[bytes] = asyncio.Queue()

    async def run(self) -> None:
        host, peer = self.host, self.peer
        old = host.sessions.get(peer)
        if old is not None:
            await old.close()
        host.sessions[peer] = self
        self._task = asyncio.current_task()
        host.table.link_state(peer, True)
        host.routes_changed()
        host.metrics.inc("mesh_link_sessions_total", peer=peer)
        log.info(
            "link %s up (%s)", peer, "dialed" if self.dialed else "accepted", extra={"peer": peer}
        )
        box = await host.router.peer_box(peer)
        box.rewind()
        try:
            await self.ws.send_str(_dump({"type": "credit", "events": host.limits.link_credit}))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reader(), name=f"link[{peer}].reader")
                tg.create_task(self._receiver(), name=f"link[{peer}].receiver")
                tg.create_task(self._sender(), name=f"link[{peer}].sender")
                tg.create_task(self._advertiser(), name=f"link[{peer}].advertiser")
        except* _Closed:
            pass
        except* (aiohttp.ClientError, ConnectionError, LinkError) as eg:
            log.warning("link %s lost: %s", peer, eg.exceptions[0], extra={"peer": peer})
        except* Exception as eg:  # a link's fault must never take the node down
            log.error("link %s failed", peer, exc_info=eg.exceptions[0], extra={"peer": peer})
        finally:
            box.rewind()
            if host.sessions.get(peer) is self:
                del host.sessions[peer]
                host.table.link_state(peer, False)
                host.routes_changed()
            with contextlib.suppress(Exception):
                await self.ws.close()
            log.info("link %s down", peer, extra={"peer": peer})

    async def close(self) -> None:
        task = self._task
        with contextlib.suppress(Exception):
            await self.ws.close()
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task])

    # -- tasks ---------------------------------------------------------------------

    async def _reader(self) -> None:
        ws = self.ws
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                self._batches.put_nowait(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await self._on_control(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                raise _Closed()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"websocket error: {ws.exception()}")

    async def _on_control(self, text: str) -> None:
        try:
            obj = orjson.loads(text)
            kind = obj["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise LinkProtocolError(self.peer, f"bad control frame: {exc}") from exc
        host = self.host
        if kind == "ack":
            seq = int(obj["seq"])
            done: list[int] = []
            for s in [s for s in self._inflight if s <= seq]:
                done.extend(self._inflight.pop(s))
            box = await host.router.peer_box(self.peer)
            await box.ack(done)
            self._grant(int(obj.get("credit", len(done))))
        elif kind == "credit":
            self._grant(int(obj["events"]))
        elif kind == "interests":
            add = [Interest.from_json(i) for i in obj.get("add", [])]
            if obj.get("full"):
                host.table.replace_learned(self.peer, add)
            else:
                remove = [Interest.from_json(i) for i in obj.get("remove", [])]
                host.table.update_learned(self.peer, add, [(i.origin, i.key) for i in remove])
            host.routes_changed()
            await host.persist_routes()
        else:
            log.debug("link %s: ignoring control frame %r", self.peer, kind)

    def _grant(self, n: int) -> None:
        self.credit += n
        if self.credit > 0:
            self._credit_ok.set()

    async def _receiver(self) -> None:
        while True:
            frames = [await self._batches.get()]
            while not self._batches.empty():
                frames.append(self._batches.get_nowait())
            await self._on_batches(frames)

    async def _on_batches(self, frames: list[bytes]) -> None:
        """Route every batch waiting, in one commit, then acknowledge the last one.

        Coalescing matters: a commit costs a round trip to the store thread, so
        routing batches one by one caps a link at a few hundred batches a second.
        """
        host = self.host
        envs = []
        dead = []
        count = 0
        seq = 0
        for frame in frames:
            seq, records = decode_batch_frame(frame)
            count += len(records)
            for rec in records:
                try:
                    envs.append(decode_record(rec))
                except LinkProtocolError as exc:
                    host.metrics.inc("mesh_dead_letters_total", reason="malformed record")
                    log.error(
                        "link %s: dead-lettered a malformed record: %s", self.peer, exc.reason
                    )
                    dead.append(
                        DeadLetter(
                            exc.reason,
                            f"link:{self.peer}",
                            "message",
                            bytes(rec),
                            {"peer": self.peer, "batch": seq},
                        )
                    )
        if dead:
            await host.router.outboxes.store.dead_letter(dead)
        while envs:
            try:
                await host.router.route(envs, from_peer=self.peer)
                break
            except Backpressure as exc:
                # Not acknowledged, so the peer's credit runs out and it stops sending:
                # backpressure travels upstream hop by hop.
                await host.router.outboxes.wait_for_room(exc)
        self.received += count
        host.metrics.inc("mesh_link_received_events_total", count, peer=self.peer)
        # Acks are cumulative: the last batch's sequence number covers them all.
        await self.ws.send_str(_dump({"type": "ack", "seq": seq, "credit": count}))

    async def _sender(self) -> None:
        host = self.host
        box = await host.router.peer_box(self.peer)
        batch_size = host.limits.batch_size
        seq = 0
        while True:
            await self._credit_ok.wait()
            records = await box.read(min(batch_size, self.credit))
            seq += 1
            self._inflight[seq] = [s for s, _ in records]
            self.credit -= len(records)
            if self.credit <= 0:
                self._credit_ok.clear()
            await self.ws.send_bytes(encode_batch_frame(seq, [r for _, r in records]))
            self.sent += len(records)
            host.metrics.inc("mesh_link_sent_events_total", len(records), peer=self.peer)

    async def _advertiser(self) -> None:
        table = self.host.table
        sent: dict[Any, Interest] = {}
        first = True
        while True:
            await self.changed.wait()
            self.changed.clear()
            now = table.advertised_to(self.peer)
            add = [i.to_json() for k, i in now.items() if sent.get(k) != i]
            remove = [i.to_json() for k, i in sent.items() if k not in now]
            if first or add or remove:
                await self.ws.send_str(
                    _dump({"type": "interests", "full": first, "add": add, "remove": remove})
                )
            first = False
            sent = now


# -- handshake ---------------------------------------------------------------------


def _check_hello(host: LinkHost, hello: dict[str, Any]) -> str | None:
    """The reason to refuse this hello, or None to accept it."""
    if hello.get("type") != "hello":
        return "expected a hello frame"
    if hello.get("version") != PROTOCOL_VERSION:
        return (
            f"protocol version {hello.get('version')!r} is not supported "
            f"(this node speaks {PROTOCOL_VERSION})"
        )
    node = hello.get("node")
    if not isinstance(node, str) or not node:
        return "hello without a node id"
    if node == host.node_id:
        return f"node id {node!r} is this node's own id"
    token = str(hello.get("token", ""))
    candidates = [a for a in host.accept if a.id in (node, "*")]
    if not candidates:
        return f"node {node!r} is not allowed to connect (not in accept)"
    if not any(hmac.compare_digest(a.token.encode(), token.encode()) for a in candidates):
        return f"wrong token for node {node!r}"
    if node in host.dialing and node in host.sessions and host.node_id < node:
        return f"duplicate link: {host.node_id} already dials {node}"
    return None


async def accept_link(host: LinkHost, request: web.Request) -> web.WebSocketResponse:
    """The ``/mesh`` handler: check the hello, then run the session."""
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=64 << 20)
    await ws.prepare(request)
    remote = request.remote or "?"
    try:
        msg = await ws.receive(timeout=HELLO_TIMEOUT)
        hello = orjson.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
        if not isinstance(hello, dict):
            hello = {}
    except (TimeoutError, orjson.JSONDecodeError):
        hello = {}
    reason = _check_hello(host, hello)
    if reason is not None:
        log.warning(
            "refused link from %s (%s): %s",
            hello.get("node", "?"),
            remote,
            reason,
            extra={"peer": hello.get("node"), "reason": reason},
        )
        host.metrics.inc("mesh_link_refused_total", reason=reason.split(" ")[0])
        with contextlib.suppress(Exception):
            await ws.send_str(_dump({"type": "refused", "reason": reason}))
            await ws.close(code=CLOSE_REFUSED, message=b"refused")
        return ws
    peer = str(hello["node"])
    await ws.send_str(
        _dump(
            {
                "type": "welcome",
                "node": host.node_id,
                "region": host.region,
                "version": PROTOCOL_VERSION,
            }
        )
    )
    await LinkSession(host, peer, str(hello.get("region", "")), ws, dialed=False).run()
    return ws


async def _handshake(host: LinkHost, peer: Peer, ws: aiohttp.ClientWebSocketResponse) -> str:
    await ws.send_str(
        _dump(
            {
                "type": "hello",
                "node": host.node_id,
                "region": host.region,
                "version": PROTOCOL_VERSION,
                "token": peer.token,
            }
        )
    )
    msg = await ws.receive(timeout=HELLO_TIMEOUT)
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise LinkError(peer.id, f"closed during the hello ({msg.type.name})")
    reply = orjson.loads(msg.data)
    if reply.get("type") == "refused":
        raise LinkRefused(peer.id, str(reply.get("reason", "no reason given")))
    if reply.get("type") != "welcome":
        raise LinkProtocolError(peer.id, f"expected welcome, got {reply.get('type')!r}")
    if reply.get("node") != peer.id:
        raise LinkRefused(
            peer.id, f"the node at {peer.url} is {reply.get('node')!r}, not {peer.id!r}"
        )
    return str(reply.get("region", ""))


async def dial_forever(
    host: LinkHost, peer: Peer, on_refused: Callable[[str], None] | None = None
) -> None:
    """Supervise the link to ``peer``: dial, run, and redial with backoff."""
    backoff = Backoff(0.2, 15.0)
    failures = 0
    host.dialing.add(peer.id)
    timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_connect=5.0)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    async with http.ws_connect(
                        peer.url, heartbeat=HEARTBEAT, max_msg_size=64 << 20
                    ) as ws:
                        region = await _handshake(host, peer, ws)
                        failures = 0
                        backoff.reset()
                        await LinkSession(host, peer.id, region, ws, dialed=True).run()
                except LinkRefused as exc:
                    failures += 1
                    log.error(
                        "link %s refused by the peer: %s",
                        peer.id,
                        exc.reason,
                        extra={"peer": peer.id, "reason": exc.reason},
                    )
                    host.metrics.inc("mesh_link_refused_total", reason="by peer")
                    if on_refused is not None:
                        on_refused(exc.reason)
                except (
                    aiohttp.ClientError,
                    OSError,
                    TimeoutError,
                    LinkError,
                    orjson.JSONDecodeError,
                ) as exc:
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(
                        level,
                        "link %s: cannot connect to %s: %s",
                        peer.id,
                        peer.url,
                        exc or type(exc).__name__,
                        extra={"peer": peer.id},
                    )
                await asyncio.sleep(backoff.next())
    finally:
        host.dialing.discard(peer.id)
