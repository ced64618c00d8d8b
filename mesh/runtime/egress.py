"""Egress workers: from a local outbox to the local broker, acknowledging only
what the broker confirmed (see :class:`EgressWorker`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mesh.core.egress import EgressRule
from mesh.core.errors import (
    EventError,
    LinkProtocolError,
    Overloaded,
    StoreError,
    TemplateError,
)
from mesh.core.message import Message
from mesh.core.schemas import NO_SCHEMAS, Schemas
from mesh.plugins import Bridge
from mesh.runtime.backoff import Backoff
from mesh.runtime.lifecycle import Drain
from mesh.runtime.metrics import Metrics
from mesh.runtime.outbox import Outbox

if TYPE_CHECKING:
    from mesh.core.envelope import Envelope
    from mesh.runtime.tracing import Spans

__all__ = ["EgressWorker"]

log = logging.getLogger(__name__)
ACK_RETRIES = 3  # a failed acknowledgement is tried again this often before the worker restarts


class EgressWorker:
    """Moves one egress rule's outbox to its broker, acknowledging only confirmed events.

    Failures follow the rule's ``on_error`` policy: transient ones are retried
    with exponential backoff and jitter (or the broker's Retry-After) until
    ``max_attempts`` or ``max_age`` is reached; then, or at once for a
    permanent failure, the event is dead-lettered, discarded (counted), or the
    worker pauses with the event at the head of its outbox until resumed.
    """

    def __init__(
        self,
        rule: EgressRule,
        outbox: Outbox,
        bridge: Callable[[], Awaitable[Bridge]],
        metrics: Metrics,
        *,
        drain: Drain | None = None,
        batch: int = 256,
        spans: Spans | None = None,
        system: str = "",
        schemas: Schemas = NO_SCHEMAS,
    ) -> None:
        self.schemas = schemas  # checked at: egress; the node replaces it on reload
        self.spans = spans
        self.system = system  # the broker's kind, for spans
        self.rule = rule
        self.outbox = outbox
        self.bridge = bridge
        self.metrics = metrics
        self.batch = batch
        self.drain = drain or Drain()
        retry = rule.on_error.retry
        self.backoff = Backoff(retry.backoff.initial, retry.backoff.max)
        self.failures: dict[int, tuple[int, float]] = {}  # seq -> (attempts, first failure)
        self.paused: str | None = None
        self._resume = asyncio.Event()
        self._acking: asyncio.Task[None] | None = None

    def resume(self) -> None:
        if self.paused is not None:
            log.info("egress %s: resumed", self.rule.name)
        self.paused = None
        self._resume.set()

    async def run(self) -> None:
        """Deliver until cancelled; the node's supervisor restarts it after a fault."""
        # After a restart, what the last run had in flight goes back in line.
        self.outbox.rewind()
        try:
            while True:
                if self._acking is not None and not self.outbox.waiting:
                    # Idle: settle the last acknowledgement now, so one that failed
                    # for good restarts the worker at once, not at the next event.
                    await self._settle()
                records = await self.outbox.read(self.batch)
                bridge = await self.bridge()
                async with self.drain.work():
                    delay = await self._deliver(bridge, records)
                if self.paused is not None:
                    await self._settle()
                    self.outbox.rewind()
                    self._resume.clear()
                    await self._resume.wait()
                    self.backoff.reset()
                elif delay is not None:
                    await self._settle()
                    self.outbox.rewind()
                    await asyncio.sleep(delay)
                else:
                    self.backoff.reset()
        finally:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for the previous batch's acknowledgement to be committed."""
        task, self._acking = self._acking, None
        if task is not None:
            await asyncio.shield(task)

    async def _ack(self, seqs: list[int]) -> None:
        """Acknowledge a delivered batch without waiting for the commit.

        The next batch is published while the store deletes this one; at most
        one acknowledgement is outstanding, and it is settled before any rewind.
        """
        await self._settle()
        if seqs:
            self._acking = asyncio.create_task(
                self._ack_durably(seqs), name=f"{self.rule.name}.ack"
            )

    async def _ack_durably(self, seqs: list[int]) -> None:
        """Acknowledge, retrying while the store is overloaded (a full disk).

        The events were published: failing here would restart the worker,
        rewind and publish them again. Deletes run on the store's reserve, so
        this normally succeeds at once.
        """
        failures = 0
        while True:
            try:
                await self.outbox.ack(seqs)
                return
            except Overloaded as exc:
                await asyncio.sleep(exc.retry_after)
            except StoreError as exc:
                # Retried a few times for the same reason; past that the worker
                # restarts and publishes the batch again (at least once).
                failures += 1
                if failures > ACK_RETRIES:
                    raise
                if failures == 1:
                    log.warning(
                        "egress %s: acknowledging failed, retrying: %s", self.rule.name, exc
                    )
                await asyncio.sleep(0.1 * 2**failures)

    async def _give_up(
        self, seq: int, event_id: str | None, topic: str | None, reason: str
    ) -> bool:
        """Apply ``on_error.then`` to one event; False if the worker must pause."""
        rule = self.rule
        about = {"egress": rule.name, "event_id": event_id, "topic": topic, "reason": reason}
        self.failures.pop(seq, None)
        then = rule.on_error.then
        if then == "pause":
            self.paused = f"event {event_id or seq}: {reason}"
            self.metrics.inc("mesh_egress_paused_total", egress=rule.name)
            log.error(
                "egress %s: paused on event %s (%s): %s",
                rule.name,
                event_id,
                topic,
                reason,
                extra=about,
            )
            return False
        if then == "discard":
            await self.outbox.ack([seq])
            self.metrics.inc("mesh_discarded_total", egress=rule.name)
            log.warning(
                "egress %s: event %s (%s) discarded: %s",
                rule.name,
                event_id,
                topic,
                reason,
                extra=about,
            )
            return True
        await self.outbox.dead_letter(seq, reason)
        self.metrics.inc("mesh_dead_letters_total", reason="egress failed")
        log.error(
            "egress %s: event %s (%s) dead-lettered: %s",
            rule.name,
            event_id or f"#{seq}",
            topic,
            reason,
            extra=about,
        )
        return True

    def _exhausted(self, seq: int) -> bool:
        retry = self.rule.on_error.retry
        attempts, first = self.failures.get(seq, (0, time.monotonic()))
        attempts += 1
        self.failures[seq] = (attempts, first)
        if retry.max_attempts and attempts >= retry.max_attempts:
            return True
        return bool(retry.max_age and time.monotonic() - first >= retry.max_age)

    async def _deliver(self, bridge: Bridge, records: list[tuple[int, bytes]]) -> float | None:
        """Publish one batch; ack what is done; return a retry delay if some failed."""
        rule = self.rule
        seqs: list[int] = []
        msgs: list[Message] = []
        envs: list[Envelope] = []
        for seq, rec in records:
            env: Envelope | None = None
            try:
                env = self.outbox.envelope(seq, rec)
                msg = rule.encode(env, self.schemas)
            except (TemplateError, EventError, LinkProtocolError) as exc:
                # Cannot succeed on retry: the policy's final step applies at once.
                why = getattr(exc, "reason", str(exc))
                if not await self._give_up(seq, *_about(env), why):
                    return None
                continue
            except Exception as exc:
                # A record no check foresaw (one stored by an older version, say)
                # would fail the same way after every restart and hold the whole
                # outbox behind it: it is this event's fault, not the worker's.
                eid, topic = _about(env)
                log.exception(
                    "egress %s: cannot encode the event at #%d (%s, %s)",
                    rule.name,
                    seq,
                    eid,
                    topic,
                    extra={"egress": rule.name, "event_id": eid, "topic": topic},
                )
                if not await self._give_up(seq, eid, topic, f"cannot encode: {exc!r}"):
                    return None
                continue
            seqs.append(seq)
            msgs.append(msg)
            envs.append(env)
        if not msgs:
            return None
        began = time.time()
        results = await bridge.publish(msgs)
        done = [seq for seq, res in zip(seqs, results, strict=True) if res is None]
        await self._ack(done)
        for seq in done:
            self.failures.pop(seq, None)
        if done:
            self.metrics.inc("mesh_egress_events_total", len(done), egress=rule.name)
            latency = self.metrics.histogram("mesh_event_latency_seconds", egress=rule.name)
            now = time.time()
            for env, msg, res in zip(envs, msgs, results, strict=True):
                if res is None:
                    if env.t_in is not None:
                        latency.observe(max(0.0, now - env.t_in))
                    if self.spans is not None:
                        self.spans.record(
                            "send", [env], system=self.system, destination=msg.topic, start=began
                        )
        delay: float | None = None
        failed = [
            (seq, env, res)
            for seq, env, res in zip(seqs, envs, results, strict=True)
            if res is not None
        ]
        if failed:
            self.metrics.inc("mesh_egress_failures_total", len(failed), egress=rule.name)
            _seq, first_env, first = failed[0]
            first_id, first_topic = _about(first_env)
            log.warning(
                "egress %s: %d of %d publishes failed, first %s (%s): %s",
                rule.name,
                len(failed),
                len(msgs),
                first_id,
                first_topic,
                first.reason,
                extra={"egress": rule.name, "event_id": first_id, "topic": first_topic},
            )
        for seq, env, res in failed:
            if res.permanent or self._exhausted(seq):
                if not await self._give_up(seq, *_about(env), res.reason):
                    return None
            else:
                wait = res.retry_after if res.retry_after is not None else self.backoff.next()
                delay = wait if delay is None else max(delay, wait)
        return delay


def _about(env: Envelope | None) -> tuple[str | None, str | None]:
    """An event's id and mesh topic, for the lines and the policy about it."""
    if env is None:
        return None, None
    return str(env.event.attrs.get("id")), env.topic
