"""An in-process broker and its bridge, for unit tests only.

Bridges configured with the same ``name`` share one :class:`MemoryBroker`.
Publishing appends to ``broker.published`` and delivers to every subscription
whose pattern (mesh syntax) matches; ``broker.acked`` / ``broker.unacked``
show what the node acknowledged. Like a real broker, it keeps what a
subscriber's inbox has no room for and hands it over when the inbox drains.
Messages carry CloudEvents the way HTTP does (``ce-`` headers or a
structured body). No test that claims to test MQTT, NATS or HTTP uses this.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from bridges.http import HttpBinding
from mesh.config import BrokerModel
from mesh.core.errors import InvalidTopic, PublishError
from mesh.core.topics import MESH_SYNTAX, Pattern
from mesh.plugins import BridgeContext, BridgeSpec, Capabilities, Delivery, Message, Subscribe

__all__ = ["SPEC", "MemoryBridge", "MemoryBroker", "MemoryBrokerConfig", "broker"]


class MemoryBrokerConfig(BrokerModel):
    """An in-process broker, for unit tests and examples only (mesh topic syntax)."""

    kind: Literal["memory"]
    name: str = Field("default", description="Bridges with the same name share one broker")


class _Subscriber:
    def __init__(self, pattern: Pattern, bridge: MemoryBridge) -> None:
        self.pattern = pattern
        self.bridge = bridge


@dataclass
class MemoryBroker:
    name: str
    published: list[Message] = field(default_factory=list)
    acked: int = 0
    unacked: int = 0
    fail_publish: PublishError | None = None
    _subs: list[_Subscriber] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def inject(self, msg: Message) -> None:
        """Deliver ``msg`` to matching subscribers as if a client had published it."""
        levels = tuple(msg.topic.split("/"))
        for sub in self._subs:
            if sub.pattern.match(levels) is not None:
                self.unacked += 1
                sub.bridge._offer(Delivery(msg, self._ack, self._nack))

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

        async with asyncio.timeout(timeout):
            await wait()
        return self.published


_brokers: dict[str, MemoryBroker] = {}


def broker(name: str = "default") -> MemoryBroker:
    """The in-process broker called ``name`` (created on first use)."""
    return _brokers.setdefault(name, MemoryBroker(name))


def reset() -> None:
    _brokers.clear()


class MemoryBridge:
    def __init__(self, cfg: MemoryBrokerConfig, ctx: BridgeContext) -> None:
        self.ctx = ctx
        self.broker = broker(cfg.name)
        self._backlog: deque[Delivery] = deque()  # what the inbox had no room for
        ctx.inbox.on_flow(lambda: None, self._drain)

    def _offer(self, d: Delivery) -> None:
        if self._backlog or not self.ctx.inbox.has_room:
            self._backlog.append(d)
        else:
            self.ctx.inbox.put(d)

    def _drain(self) -> None:
        inbox = self.ctx.inbox
        while self._backlog and inbox.has_room:
            inbox.put(self._backlog.popleft())

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        for s in subscriptions:
            self.broker._subs.append(_Subscriber(Pattern.compile(s.topic), self))

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        if self.broker.fail_publish is not None:
            return [self.broker.fail_publish] * len(messages)
        results: list[PublishError | None] = []
        for m in messages:
            # Like a real broker, refuse a topic no subscriber could be sent.
            if not m.topic or "+" in m.topic or "#" in m.topic:
                results.append(InvalidTopic(self.ctx.broker, m.topic, "empty or with + or #"))
            else:
                self.broker.published.append(m)
                results.append(None)
        self.broker._changed.set()
        return results

    async def close(self) -> None:
        self.broker._subs = [s for s in self.broker._subs if s.bridge is not self]
        self.ctx.inbox.lost("closed")


# Memory carries CloudEvents as HTTP does: ``ce-`` headers, or a structured/batch body.
_BINDING = HttpBinding()
_CAPABILITIES = Capabilities(redelivery=False, queue_groups=False, no_local=False, confirm=True)

SPEC = BridgeSpec(
    kind="memory",
    config=MemoryBrokerConfig,
    syntax=MESH_SYNTAX,
    factory=MemoryBridge,
    binding=lambda cfg: _BINDING,
    capabilities=lambda cfg: _CAPABILITIES,
    summary="an in-process broker for unit tests",
)
