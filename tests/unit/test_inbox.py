"""The one bounded inbox between a bridge and the node."""

from __future__ import annotations

import asyncio

import pytest

from mesh.core.errors import BrokerUnavailable
from mesh.runtime.inbox import Inbox


class Source:
    """Stands in for a bridge's socket: records pause and resume."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def filled(high: int = 4, low: int | None = None) -> tuple[Inbox, Source]:
    inbox = Inbox("b", high=high, low=low)
    src = Source()
    inbox.on_flow(src.pause, src.resume)
    return inbox, src


async def test_the_source_is_paused_at_high_and_resumed_at_low() -> None:
    inbox, src = filled(high=4, low=1)
    for i in range(3):
        inbox.put(i)  # type: ignore[arg-type]
    assert src.calls == [] and inbox.has_room and inbox.room == 1
    inbox.put(3)  # type: ignore[arg-type]
    assert src.calls == ["pause"] and not inbox.has_room and inbox.room == 0
    inbox.put(4)  # type: ignore[arg-type]  # a protocol's in-flight overshoot
    assert src.calls == ["pause"]
    assert await inbox.take(3) == [0, 1, 2]
    assert src.calls == ["pause"]  # two left, low is 1
    assert await inbox.take(1) == [3]
    assert src.calls == ["pause", "resume"] and inbox.has_room


async def test_offer_refuses_at_high_and_counts() -> None:
    inbox, _ = filled(high=2)
    assert inbox.offer(1) and inbox.offer(2)  # type: ignore[arg-type]
    assert not inbox.offer(3)  # type: ignore[arg-type]
    assert inbox.dropped == 1 and len(inbox) == 2
    assert await inbox.take(10) == [1, 2]
    assert inbox.offer(4)  # type: ignore[arg-type]


async def test_take_waits_for_a_delivery() -> None:
    inbox, _ = filled()
    waiter = asyncio.create_task(inbox.take(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    inbox.put("x")  # type: ignore[arg-type]
    assert await asyncio.wait_for(waiter, 1) == ["x"]


async def test_a_lost_connection_hands_over_what_came_first_then_raises() -> None:
    inbox, src = filled(high=2)
    inbox.put(1)  # type: ignore[arg-type]
    inbox.put(2)  # type: ignore[arg-type]
    inbox.lost("socket closed")
    assert await inbox.take(1) == [1]
    assert await inbox.take(1) == [2]
    with pytest.raises(BrokerUnavailable, match="socket closed"):
        await inbox.take(1)
    assert "resume" not in src.calls  # nothing to resume on a lost connection


async def test_wait_for_room_blocks_while_paused() -> None:
    inbox, _ = filled(high=2, low=0)
    inbox.put(1)  # type: ignore[arg-type]
    inbox.put(2)  # type: ignore[arg-type]
    waiter = asyncio.create_task(inbox.wait_for_room())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await inbox.take(2)
    await asyncio.wait_for(waiter, 1)


def test_an_inbox_holds_at_least_one() -> None:
    with pytest.raises(ValueError):
        Inbox("b", high=0)
    inbox = Inbox("b", high=10)
    with pytest.raises(ValueError):
        inbox.resize(0)
    inbox.resize(8, 20)
    assert (inbox.high, inbox.low) == (8, 8)
