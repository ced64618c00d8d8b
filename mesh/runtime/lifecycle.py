"""Supervised tasks, fault reports, and the helpers shutdown needs.

Every long-lived task of a node runs under :func:`supervise`: bridge
connections, egress workers, link dialers, JetStream pullers, keepalives,
maintenance. A supervisor catches every exception but a cancellation, reports
it once through :class:`Faults` (repeats of the same fault are counted and
summarised, not printed each time), counts ``mesh_task_restarts_total{task}``,
backs off and runs the body again. Nothing a task raises can end the node.

:class:`TaskScope` owns the supervised tasks of one thing that comes and goes
(a broker connection, a link session): they run in the node's task group and
are cancelled together when the scope closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

from mesh.core.errors import MeshError
from mesh.runtime.backoff import Backoff
from mesh.runtime.metrics import Metrics

__all__ = ["Drain", "Faults", "TaskScope", "cancel_and_wait", "supervise"]

log = logging.getLogger(__name__)

Body = Callable[[], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]

HEALTHY_AFTER = 30.0  # seconds a body must run before its backoff starts over
REPEAT_SUMMARY = 60.0  # seconds between "repeated N times" lines for one fault


class Faults:
    """Logs each distinct fault once per task; repeats are counted, then summarised.

    A fault is identified by the task, the exception type and its message. The
    first occurrence is logged (with a traceback unless it is one of the
    gateway's own errors, whose messages say what went wrong); later ones
    only count, and at most every ``REPEAT_SUMMARY`` seconds one line says how
    many there were. A different fault in the same task is logged at once.
    """

    def __init__(self, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic):
        self.metrics = metrics
        self._clock = clock
        self._last: dict[str, tuple[str, float, int]] = {}  # task -> (fault, since, repeats)

    def report(self, task: str, exc: BaseException, *, what: str = "failed") -> bool:
        """Record a fault of ``task``; return True if it was logged now."""
        key = f"{type(exc).__name__}: {exc}"
        now = self._clock()
        last = self._last.get(task)
        if last is not None and last[0] == key:
            fault, since, repeats = last
            repeats += 1
            if now - since >= REPEAT_SUMMARY:
                log.warning(
                    "%s: the same fault repeated %d times: %s",
                    task,
                    repeats,
                    key,
                    extra={"task": task},
                )
                self._last[task] = (fault, now, 0)
                return True
            self._last[task] = (fault, since, repeats)
            return False
        if last is not None and last[2]:
            log.warning("%s: the previous fault repeated %d times", task, last[2])
        self._last[task] = (key, now, 0)
        if isinstance(exc, MeshError):
            log.warning("%s %s: %s", task, what, exc, extra={"task": task})
        else:
            log.error("%s %s", task, what, exc_info=exc, extra={"task": task})
        return True

    def last(self, task: str) -> str | None:
        """The fault ``task`` reported last and has not cleared, as logged; None if none."""
        entry = self._last.get(task)
        return entry[0].split(": ", 1)[-1] if entry is not None else None

    def clear(self, task: str) -> None:
        """``task`` works again: its next fault is logged at once."""
        last = self._last.pop(task, None)
        if last is not None and last[2]:
            log.info("%s: recovered (the last fault repeated %d times)", task, last[2])


async def supervise(
    name: str,
    body: Body,
    backoff: Backoff | None = None,
    *,
    faults: Faults,
    restart: bool = True,
) -> None:
    """Run ``body`` until it returns; whatever it raises is reported, then it runs again.

    A cancellation is never caught: it stops the supervisor. After a fault the
    supervisor waits ``backoff.next()`` (exponential with jitter; the backoff
    starts over once a run lasted ``HEALTHY_AFTER`` seconds) and runs the body
    again; with ``restart=False`` it reports the fault and returns.
    """
    backoff = backoff or Backoff(0.2, 10.0)
    metrics = faults.metrics
    while True:
        started = time.monotonic()
        try:
            await body()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            faults.report(name, exc)
            if metrics is not None:
                metrics.inc("mesh_task_restarts_total", task=name)
            if not restart:
                return
        if time.monotonic() - started >= HEALTHY_AFTER:
            backoff.reset()
        await asyncio.sleep(backoff.next())


class TaskScope:
    """Supervised tasks that belong to one thing and end with it.

    ``spawn`` starts a supervised task (in the node's task group when the
    scope was given the group's ``create_task``); ``aclose`` cancels every task
    of the scope and waits for them. Tasks that finish leave the scope.
    """

    def __init__(self, faults: Faults, spawn: Spawn | None = None, prefix: str = "") -> None:
        self.faults = faults
        self._spawn = spawn
        self.prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def spawn(
        self, name: str, body: Body, backoff: Backoff | None = None, *, restart: bool = True
    ) -> asyncio.Task[None]:
        if self.closed:
            raise RuntimeError(f"task scope {self.prefix or '?'} is closed")
        full = f"{self.prefix}{name}"
        coro = supervise(full, body, backoff, faults=self.faults, restart=restart)
        if self._spawn is not None:
            task = self._spawn(coro, full)
        else:
            task = asyncio.get_running_loop().create_task(coro, name=full)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def child(self, prefix: str) -> TaskScope:
        """A scope of its own whose tasks run where this scope's run."""
        return TaskScope(self.faults, self._spawn, prefix)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    async def aclose(self) -> None:
        self.closed = True
        await cancel_and_wait(list(self._tasks))


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
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, nudge: float = 1.0) -> None:
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
