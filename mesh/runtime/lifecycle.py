"""Lifecycle helpers shared by the node's long-running tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

__all__ = ["Drain", "cancel_and_wait"]

log = logging.getLogger(__name__)


class Drain:
    """Counts work in progress so shutdown can wait for it."""

    def __init__(self) -> None:
        self.busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def work(self) -> AsyncIterator[None]:
        self.busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.busy -= 1
            if self.busy == 0:
                self._idle.set()

    async def idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, nudge: float = 1.0) -> None:
    """Cancel ``tasks`` and return once every one of them has finished.

    A task that carries on after a cancellation is cancelled again every
    ``nudge`` seconds. Python 3.11's ``asyncio.wait_for`` swallows a
    cancellation that arrives just as the awaited future completes (fixed in
    3.12), and libraries use it on our hot paths (nats-py's ``flush``): a single
    ``cancel()`` then leaves an egress worker running and whoever awaits it
    (a reload, a shutdown) waiting for ever. What the tasks raised is left
    to their owner (a task group); a cancellation of the caller propagates.
    """
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=nudge)
        for t in pending:
            log.debug("task %s ignored a cancellation; cancelling it again", t.get_name())
            t.cancel()
