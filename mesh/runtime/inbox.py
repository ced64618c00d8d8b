"""The one bounded inbox between a bridge and the node.

A bridge puts every delivery it receives into its :class:`Inbox`; the node
takes batches from it. Between ``low`` and ``high`` deliveries the inbox
just fills; when it reaches ``high`` it is *paused*: it calls the bridge's
``pause`` (stop reading the socket, stop fetching) and resumes it once the
node has taken it down to ``low``. A source that cannot be paused (core NATS
pushes whatever is published) uses :meth:`Inbox.offer`, which refuses a
delivery once ``high`` are waiting; the bridge counts the drop. Either way
memory stays bounded by what the bridge lets in past ``high`` (a protocol's
in-flight window at most) and nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.core.errors import BrokerUnavailable

if TYPE_CHECKING:
    from mesh.plugins import Delivery

__all__ = ["Inbox"]

DEFAULT_HIGH = 4096


class Inbox:
    """Deliveries waiting for the node, with high and low water marks."""

    def __init__(self, broker: str, *, high: int = DEFAULT_HIGH, low: int | None = None) -> None:
        if high < 1:
            raise ValueError("an inbox holds at least one delivery")
        self.broker = broker
        self.high = high
        self.low = high // 2 if low is None else min(low, high)
        self._items: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._lost: str | None = None
        self.paused = False
        self.dropped = 0
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    # -- the bridge's side ---------------------------------------------------------------

    def resize(self, high: int, low: int | None = None) -> None:
        """Set the water marks (a bridge sizes them to its protocol's in-flight window)."""
        if high < 1:
            raise ValueError("an inbox holds at least one delivery")
        self.high = high
        self.low = high // 2 if low is None else min(low, high)

    def on_flow(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Tell the inbox how to stop and restart the source when it fills and drains."""
        self._pause = pause
        self._resume = resume

    def put(self, delivery: Delivery) -> None:
        """Add a delivery; at ``high`` the source is paused (it may overshoot a little)."""
        items = self._items
        items.append(delivery)
        self._arrived.set()
        if len(items) >= self.high and not self.paused:
            self.paused = True
            self._room.clear()
            if self._pause is not None:
                self._pause()

    def offer(self, delivery: Delivery) -> bool:
        """Add a delivery unless ``high`` are waiting; False means refused (count it)."""
        if len(self._items) >= self.high:
            self.dropped += 1
            return False
        self.put(delivery)
        return True

    @property
    def has_room(self) -> bool:
        return not self.paused

    @property
    def room(self) -> int:
        """How many deliveries fit before the inbox pauses."""
        return max(0, self.high - len(self._items))

    async def wait_for_room(self) -> None:
        """Wait until the inbox is below its low water mark (for pull-based sources)."""
        await self._room.wait()

    def lost(self, reason: str) -> None:
        """The connection is gone: the node gets what is queued, then BrokerUnavailable."""
        if self._lost is None:
            self._lost = reason
        self._arrived.set()
        self._room.set()

    # -- the node's side ------------------------------------------------------------------

    def take_all(self) -> list[Delivery]:
        """Everything queued, at once (to refuse it when the connection's session ends)."""
        out = list(self._items)
        self._items.clear()
        return out

    async def take(self, limit: int) -> list[Delivery]:
        """Wait for at least one delivery and return up to ``limit`` of them.

        Raises BrokerUnavailable once the connection is lost and everything
        received before the loss has been taken.
        """
        items = self._items
        while not items:
            if self._lost is not None:
                raise BrokerUnavailable(self.broker, self._lost)
            self._arrived.clear()
            await self._arrived.wait()
        n = min(limit, len(items))
        if n == len(items):
            out = list(items)
            items.clear()
        else:
            out = [items.popleft() for _ in range(n)]
        if self.paused and len(items) <= self.low:
            self.paused = False
            self._room.set()
            if self._resume is not None and self._lost is None:
                self._resume()
        return out
