"""What a bridge is: the thin edge between a node and one local broker.

A bridge connects, receives batches of :class:`Delivery` objects for the topics the node
subscribes to (each can be acked once the node made the event durable, or
nacked), publishes batches of :class:`Message` (returning only once the
broker confirmed each one), and closes. Reconnects, retries, storage,
routing and transforms live in ``mesh``, once, for every protocol.

Bridges are found through the ``mesh.bridges`` entry-point group, so ``mesh``
never imports ``bridges``: :func:`load_bridge_classes` builds the registry at
start-up.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from mesh.core.errors import MeshError, PublishError
from mesh.core.message import Message, Subscribe

__all__ = [
    "Bridge",
    "BridgeFactory",
    "Delivery",
    "Message",
    "Subscribe",
    "load_bridge_classes",
]


Settle = Callable[[], Awaitable[None] | None]


class Delivery:
    """A received message whose acknowledgement the node controls.

    ``ack`` and ``nack`` callbacks may be plain functions (paho) or coroutine
    functions (JetStream); either way the node awaits the result.
    """

    __slots__ = ("_ack", "_nack", "message")

    def __init__(
        self, message: Message, ack: Settle | None = None, nack: Settle | None = None
    ) -> None:
        self.message = message
        self._ack = ack
        self._nack = nack

    async def ack(self) -> None:
        """The event is durable in the node: let the broker forget it."""
        if self._ack is not None:
            result = self._ack()
            if result is not None:
                await result

    async def nack(self) -> None:
        """The node could not take the event: let the broker redeliver it if it can."""
        if self._nack is not None:
            result = self._nack()
            if result is not None:
                await result


@runtime_checkable
class Bridge(Protocol):
    """The interface every bridge implements."""

    name: str

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        """Connect and subscribe; raise BrokerUnavailable on failure."""

    async def receive(self, limit: int) -> list[Delivery]:
        """Wait for at least one message; return up to ``limit`` of them.

        Raises BrokerUnavailable when the connection is lost, even with no
        subscriptions, so the node learns about it.
        """
        ...

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Publish in order; one result per message, None when the broker confirmed it."""
        ...

    async def close(self) -> None:
        """Disconnect; pending deliveries are not acked."""


BridgeFactory = Callable[[str, Any, str], Bridge]
"""``factory(broker_name, broker_config, node_id)`` builds a bridge."""


def load_bridge_classes() -> dict[str, BridgeFactory]:
    """The bridge registry: broker kind -> factory, from the ``mesh.bridges`` entry points."""
    out: dict[str, BridgeFactory] = {}
    for ep in importlib.metadata.entry_points(group="mesh.bridges"):
        try:
            out[ep.name] = ep.load()
        except Exception as exc:  # a broken plug-in must say so, not vanish
            raise MeshError(f"cannot load bridge {ep.name!r} ({ep.value}): {exc}") from exc
    return out
