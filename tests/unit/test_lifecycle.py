"""Supervised tasks: faults reported once and counted, cancellations obeyed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mesh.core.errors import BrokerUnavailable
from mesh.runtime.backoff import Backoff
from mesh.runtime.lifecycle import REPEAT_SUMMARY, Faults, TaskScope, cancel_and_wait, supervise
from mesh.runtime.metrics import Metrics


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


# -- supervise and Faults ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fast() -> Backoff:
    return Backoff(0.001, 0.002)


async def test_a_failing_body_is_reported_counted_and_run_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    faults = Faults(metrics)
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError("bad thing")

    with caplog.at_level(logging.WARNING, logger="mesh.runtime.lifecycle"):
        await asyncio.wait_for(supervise("worker", body, fast(), faults=faults), 5)
    assert runs == 4
    assert metrics.get("mesh_task_restarts_total", task="worker") == 3
    logged = [r for r in caplog.records if "bad thing" in r.getMessage() or r.exc_info]
    assert len(logged) == 1  # the same fault three times: printed once
    assert logged[0].name == "mesh.runtime.lifecycle"


async def test_a_cancellation_is_never_caught() -> None:
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("w", body, fast(), faults=Faults()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_restart_a_fault_is_reported_and_the_task_ends() -> None:
    metrics = Metrics()
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("once")

    await asyncio.wait_for(
        supervise("link", body, fast(), faults=Faults(metrics), restart=False), 5
    )
    assert runs == 1
    assert metrics.get("mesh_task_restarts_total", task="link") == 1


def test_repeats_are_summarised_and_a_new_fault_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    faults = Faults(clock=clock)
    with caplog.at_level(logging.INFO, logger="mesh.runtime.lifecycle"):
        assert faults.report("t", BrokerUnavailable("b", "down"))
        for _ in range(10):
            clock.now += 1
            assert not faults.report("t", BrokerUnavailable("b", "down"))
        clock.now += REPEAT_SUMMARY
        assert faults.report("t", BrokerUnavailable("b", "down"))  # the summary line
        assert faults.report("t", OSError("other"))  # a different fault: at once
        assert faults.report("u", BrokerUnavailable("b", "down"))  # another task: at once
        faults.clear("t")
    text = [r.getMessage() for r in caplog.records]
    assert sum("repeated 11 times" in m for m in text) == 1
    assert any("t failed" in m for m in text)
    assert faults.report("t", OSError("other"))  # cleared: logged again


async def test_a_task_scope_runs_supervised_tasks_and_closes_them_all() -> None:
    faults = Faults()
    scope = TaskScope(faults, prefix="broker:x/")
    running = asyncio.Event()

    async def forever() -> None:
        running.set()
        await asyncio.sleep(3600)

    task = scope.spawn("reader", forever)
    child = scope.child("broker:x/egress/")
    other = child.spawn("w", forever)
    await running.wait()
    assert task.get_name() == "broker:x/reader"
    assert task in scope.tasks and other not in scope.tasks
    await scope.aclose()
    assert task.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        scope.spawn("late", forever)
    await child.aclose()
    assert other.cancelled()
