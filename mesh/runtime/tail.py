"""Live tails: the events entering a node, copied to ``GET /api/tail`` clients.

A :class:`TailHub` holds the subscribers, each with a compiled mesh-topic
pattern, an optional CloudEvents filter and a bounded queue. The router calls
:meth:`TailHub.offer` after a batch is durable, and only while
:attr:`TailHub.subscribers` is non-empty, so a node nobody tails pays one
attribute check per batch. A tail never slows the node: an event that does not
fit a subscriber's queue is dropped for that subscriber, counted in
``mesh_tail_dropped_total`` and reported to it as ``{"type": "dropped"}``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import orjson

from mesh.core.envelope import Envelope
from mesh.core.errors import TooManyClients
from mesh.core.filters import Predicate, compile_filter
from mesh.core.topics import Pattern
from mesh.runtime.metrics import Metrics

__all__ = ["MAX_TAIL_CLIENTS", "TAIL_QUEUE", "TailHub", "TailSubscription", "event_frame"]

MAX_TAIL_CLIENTS = 16
TAIL_QUEUE = 1000  # events held for one slow client before they are dropped for it
TAIL_BYTES = 8 << 20  # and bytes: large events fill a client's share sooner


def event_frame(env: Envelope) -> str:
    """One event as the JSON text frame a tail client receives."""
    ev = env.event
    out: dict[str, Any] = {"topic": env.topic, "origin": env.origin, "attributes": ev.attrs}
    if ev.data is not None:
        try:
            out["data"] = ev.data.decode("utf-8")
        except UnicodeDecodeError:
            out["data_base64"] = base64.b64encode(ev.data).decode("ascii")
    return orjson.dumps(out).decode()


class TailSubscription:
    """One tail client: what it wants, and the events waiting for it."""

    def __init__(
        self, hub: TailHub, pattern: Pattern, predicate: Predicate | None, size: int
    ) -> None:
        self.hub = hub
        self.pattern = pattern
        self.predicate = predicate
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(size)
        self.bytes = 0  # held in the queue
        self.dropped = 0  # dropped since the client was last told

    def wants(self, levels: tuple[str, ...], env: Envelope) -> bool:
        if self.pattern.match(levels) is None:
            return False
        return self.predicate is None or self.predicate(env.event.attrs)

    async def next_frame(self) -> str:
        """The next frame to send: a drop report when events were dropped, else an event."""
        if self.dropped:
            n, self.dropped = self.dropped, 0
            return orjson.dumps({"type": "dropped", "count": n}).decode()
        env = await self.queue.get()
        self.bytes -= env.event.size()
        return event_frame(env)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class TailHub:
    """The node's tail subscribers (at most ``max_clients``)."""

    def __init__(
        self, metrics: Metrics, max_clients: int = MAX_TAIL_CLIENTS, queue: int = TAIL_QUEUE
    ) -> None:
        self.metrics = metrics
        self.max_clients = max_clients
        self.queue = queue
        self.subscribers: list[TailSubscription] = []

    def subscribe(self, pattern: str, filter_spec: Any = None) -> TailSubscription:
        """A new subscriber; TopicError, FilterError or TooManyClients if it cannot be."""
        compiled = Pattern.compile(pattern)
        predicate = compile_filter(filter_spec) if filter_spec is not None else None
        if len(self.subscribers) >= self.max_clients:
            raise TooManyClients("/api/tail", self.max_clients)
        sub = TailSubscription(self, compiled, predicate, self.queue)
        # A new list, so that an offer() iterating the old one is not disturbed.
        self.subscribers = [*self.subscribers, sub]
        return sub

    def unsubscribe(self, sub: TailSubscription) -> None:
        self.subscribers = [s for s in self.subscribers if s is not sub]

    def offer(self, envs: Sequence[Envelope]) -> None:
        """Copy the matching events to each subscriber; never waits."""
        subs = self.subscribers
        dropped = 0
        for env in envs:
            levels = tuple(env.topic.split("/"))
            for sub in subs:
                if not sub.wants(levels, env):
                    continue
                size = env.event.size()
                if sub.bytes + size > TAIL_BYTES or sub.queue.full():
                    sub.dropped += 1
                    dropped += 1
                    continue
                sub.queue.put_nowait(env)
                sub.bytes += size
        if dropped:
            self.metrics.inc("mesh_tail_dropped_total", dropped)
