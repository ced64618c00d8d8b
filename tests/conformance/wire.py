"""What the conformance cases drive: a :class:`Wire` (a real broker and
independent clients of it) and the bridges a case opens on it.

A bridge's suite subclasses :class:`Wire` once; the cases in
:mod:`tests.conformance.base` use nothing else of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.core.errors import BridgeError, PublishError
from mesh.plugins import (
    Bridge,
    BridgeContext,
    BridgeSpec,
    Delivery,
    HttpIngress,
    Message,
    Subscribe,
)
from mesh.runtime.inbox import Inbox
from tests.helpers import open_bridge

__all__ = ["Bridges", "Collected", "Opened", "Sending", "WatchedInbox", "Wire"]


class WatchedInbox(Inbox):
    """The node's inbox, remembering the most deliveries it ever held at once."""

    def __init__(self, broker: str, *, high: int | None = None) -> None:
        if high is None:
            super().__init__(broker)
        else:
            super().__init__(broker, high=high)
        self.most = 0

    def put(self, delivery: Delivery) -> None:
        super().put(delivery)
        self.most = max(self.most, len(self))


class Collected:
    """What an independent client saw, in arrival order: (topic, payload)."""

    def __init__(self, source: Callable[[], list[tuple[str, bytes]]] | None = None) -> None:
        self._items: list[tuple[str, bytes]] = []
        self._source = source  # broker state read on demand instead of callbacks
        self._changed = asyncio.Event()

    @property
    def items(self) -> list[tuple[str, bytes]]:
        return self._source() if self._source is not None else self._items

    def add(self, topic: str, payload: bytes) -> None:
        """Record one message (thread-safe callers go through ``call_soon_threadsafe``)."""
        self._items.append((topic, payload))
        self._changed.set()

    def payloads(self) -> list[bytes]:
        return [p for _t, p in self.items]

    async def wait(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """The payloads once ``n`` arrived (a caller comparing them sees any extras)."""
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                if self._source is not None:
                    await asyncio.sleep(0.01)
                else:
                    await self._changed.wait()
        return self.payloads()


class Sending:
    """Messages an independent client is sending; the requests still open, if any.

    A broker takes a publish at once; an HTTP request stays open until the
    node answers it, so HTTP injections run as tasks owned here.
    """

    def __init__(self, tasks: Sequence[asyncio.Task[int]] = ()) -> None:
        self.tasks = list(tasks)

    @property
    def open(self) -> int:
        return sum(not t.done() for t in self.tasks)

    @property
    def answered(self) -> list[int]:
        return [t.result() for t in self.tasks if t.done()]

    async def wait(self, timeout: float = 10.0) -> list[int]:
        """Every answer (an HTTP status each; nothing for brokers)."""
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*self.tasks))

    def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()


class Wire:
    """One real broker, and independent clients of it, as one bridge's suite needs them.

    ``tag`` names a test's own topics (tests.helpers.unique); ``topic`` and
    ``subscription`` write them in the protocol's syntax.
    """

    label = "?"
    unacked_by_reconnect = True
    """Whether the broker's unacknowledged count is seen only by reconnecting
    (MQTT); otherwise :meth:`unacked` reads it."""

    def config(self, identity: str, *, proxied: bool = False) -> dict[str, Any]:
        """A bridge config; ``identity`` is a stable session (an MQTT client id),
        ``proxied`` routes it through a link :meth:`cut` can sever."""
        raise NotImplementedError

    def ingress(self) -> HttpIngress | None:
        return None

    async def prepare(self, tag: str) -> None:
        """Broker-side setup for a test's topics (a JetStream stream and consumer)."""

    def topic(self, tag: str, leaf: str) -> str:
        raise NotImplementedError

    def subscription(self, tag: str) -> Subscribe:
        raise NotImplementedError

    def loop_topic(self, tag: str, leaf: str) -> str:
        """Where a bridge publishes for :meth:`subscription` to receive it."""
        return self.topic(tag, leaf)

    def bad_topics(self, tag: str) -> list[str]:
        raise NotImplementedError

    async def inject(self, tag: str, payloads: Sequence[bytes], *, ordered: bool = True) -> Sending:
        """Publish with an independent client; returns once the broker has them."""
        raise NotImplementedError

    async def observe(self, tag: str) -> Collected:
        """An independent subscriber to every topic of ``tag``, subscribed on return."""
        raise NotImplementedError

    async def stored(self, tag: str) -> int | None:
        """How many messages of ``tag`` the broker holds now, where it can say."""
        return None

    async def unacked(self, tag: str) -> int | None:
        """Deliveries of ``tag`` the broker holds unacknowledged, where it can say."""
        return None

    async def cut(self) -> None:
        """Sever proxied connections at once (no goodbye)."""

    async def stop(self) -> None:
        raise NotImplementedError

    async def kill(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release clients (the broker fixtures stop the processes)."""


@dataclass
class Opened:
    identity: str
    bridge: Bridge
    ctx: BridgeContext
    subscriptions: list[Subscribe] = field(default_factory=list)
    closed: bool = False

    @property
    def inbox(self) -> WatchedInbox:
        assert isinstance(self.ctx.inbox, WatchedInbox)
        return self.ctx.inbox

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Publish; a BridgeError raised counts as that error for every message.

        Anything else (a raw library exception) propagates and fails the case.
        """
        try:
            return await self.bridge.publish(messages)
        except BridgeError as exc:
            err = exc if isinstance(exc, PublishError) else PublishError(exc.broker, exc.reason)
            return [err] * len(messages)


class Bridges:
    """Opens bridges for one test and closes every one of them at the end."""

    def __init__(self, spec: BridgeSpec, wire: Wire) -> None:
        self.spec = spec
        self.wire = wire
        self.opened: list[Opened] = []

    def create(
        self,
        identity: str,
        subscriptions: Sequence[Subscribe] = (),
        *,
        inbox_high: int | None = None,
        proxied: bool = False,
    ) -> Opened:
        name = f"conf-{identity}"
        bridge, ctx = open_bridge(
            self.spec,
            self.wire.config(identity, proxied=proxied),
            name,
            inbox=WatchedInbox(name, high=inbox_high),
            http=self.wire.ingress(),
        )
        o = Opened(identity, bridge, ctx, list(subscriptions))
        self.opened.append(o)
        return o

    async def open(
        self,
        identity: str,
        subscriptions: Sequence[Subscribe] = (),
        *,
        inbox_high: int | None = None,
        proxied: bool = False,
    ) -> Opened:
        o = self.create(identity, subscriptions, inbox_high=inbox_high, proxied=proxied)
        await o.bridge.connect(o.subscriptions)
        return o

    async def close(self, o: Opened) -> None:
        if not o.closed:
            o.closed = True
            await o.bridge.close()

    async def aclose(self) -> None:
        for o in reversed(self.opened):
            with contextlib.suppress(BridgeError):
                await self.close(o)
