"""cancel_and_wait: a task that ignores a cancellation is still stopped."""

from __future__ import annotations

import asyncio

from mesh.runtime.lifecycle import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as Python 3.11's wait_for can do

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait([task], nudge=0.05)
    assert task.cancelled()
    assert swallowed == 1
