"""An in-process broker and its bridge, for pure unit tests only.

Bridges configured with the same ``name`` share one :class:`MemoryBroker`.
Publishing appends to ``broker.published`` and delivers to every subscription
whose MQTT-style pattern matches; ``broker.acked`` / ``broker.unacked`` show
what the node acknowledged. No test that claims to test MQTT, NATS or HTTP
uses this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.config import MemoryBroker as MemoryBrokerConfig
from mesh.core.errors import BrokerUnavailable, PublishError
from mesh.core.topics import Pattern
from mesh.plugins import Delivery, Message, Subscribe

__all__ = ["MemoryBridge", "MemoryBroker", "broker"]


@dataclass
class MemoryBroker:
    name: str
    published: list[Message] = field(default_factory=list)
    acked: int = 0
    unacked: int = 0
    fail_publish: PublishError | None = None
    _subs: list[tuple[Pattern, asyncio.Queue[Delivery | None]]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def inject(self, msg: Message) -> None:
        """Deliver ``msg`` to matching subscribers as if a client had published it."""
        levels = tuple(msg.topic.split("/"))
        for pattern, queue in self._subs:
            if pattern.match(levels) is not None:
                self.unacked += 1
                queue.put_nowait(Delivery(msg, self._ack, self._nack))

    def _ack(self) -> None:
        self.acked += 1
        self.unacked -= 1

    def _nack(self) -> None:
        self.unacked -= 1

    async def wait_published(self, n: int, timeout: float = 10.0) -> list[Message]:
        async def wait() -> None:
            while len(self.published) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.published


_brokers: dict[str, MemoryBroker] = {}


def broker(name: str = "default") -> MemoryBroker:
    """The in-process broker called ``name`` (created on first use)."""
    return _brokers.setdefault(name, MemoryBroker(name))


def reset() -> None:
    _brokers.clear()


class MemoryBridge:
    def __init__(self, name: str, cfg: MemoryBrokerConfig, node_id: str) -> None:
        self.name = name
        self.broker = broker(cfg.name)
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        for s in subscriptions:
            self.broker._subs.append((Pattern.compile(s.topic), self._queue))

    async def receive(self, limit: int) -> list[Delivery]:
        first = await self._queue.get()
        if first is None:
            raise BrokerUnavailable(self.name, "closed")
        out = [first]
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            out.append(item)
        return out

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        if self.broker.fail_publish is not None:
            return [self.broker.fail_publish] * len(messages)
        self.broker.published.extend(messages)
        self.broker._changed.set()
        return [None] * len(messages)

    async def close(self) -> None:
        self.broker._subs = [(p, q) for p, q in self.broker._subs if q is not self._queue]
        self._queue.put_nowait(None)
