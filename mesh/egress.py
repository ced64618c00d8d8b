"""Egress: from a local outbox to the local broker, in the subscriber's format.

One :class:`EgressWorker` per egress rule reads its outbox in order, renders
the target template, encodes each event in the rule's mode (``binary``,
``structured`` or ``data``: the payload alone), publishes the batch through
the bridge and acknowledges the outbox only for what the broker confirmed.
A transient failure puts the rest back in line and retries after a backoff;
a permanent one (a template that cannot render, a webhook answering 400)
sends the event to the dead-letter count with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from mesh.backoff import Backoff
from mesh.bridge import Bridge, Message
from mesh.codec import Mode, encode_http, encode_mqtt, encode_nats
from mesh.config import EgressRule as EgressConfig
from mesh.config import MeshConfig
from mesh.envelope import Envelope
from mesh.errors import EventError, LinkProtocolError, TemplateError
from mesh.lifecycle import Drain
from mesh.metrics import Metrics
from mesh.outbox import Outbox
from mesh.templates import RenderContext, Template
from mesh.topics import Pattern

__all__ = ["EgressRule", "EgressWorker"]

log = logging.getLogger(__name__)


class EgressRule:
    """A compiled egress rule: pattern, filter spec, target template, encoding."""

    def __init__(self, index: int, cfg: EgressConfig, config: MeshConfig) -> None:
        broker = config.brokers[cfg.to]
        self.index = index
        self.broker = cfg.to
        self.kind = broker.kind
        self.protocol: Literal["5", "3.1.1"] = broker.version if broker.kind == "mqtt" else "5"
        self.pattern = Pattern.compile(cfg.topic)
        self.filter = cfg.filter
        self.target = Template(cfg.target, max_capture=self.pattern.wildcards)
        self.mode = cfg.mode
        self.qos = cfg.qos
        self.retain = cfg.retain
        self.separator = "." if self.kind == "nats" else "/"
        self.jetstream = broker.kind == "nats" and broker.jetstream
        self.on_error = cfg.on_error
        self.name = f"egress[{index}]"
        # What a running worker depends on; a change restarts it (see Node.reload).
        self.settings = (cfg.model_dump(), broker.model_dump())

    def encode(self, env: Envelope) -> Message:
        """Render the target and encode the event; raises TemplateError or EventError."""
        ev = env.event
        caps = self.pattern.match(tuple(env.topic.split("/"))) or ()
        ctx = RenderContext(
            captures=caps,
            node=env.origin,
            topic=env.topic,
            attrs=ev.attrs,
            payload=ev.data,
            separator=self.separator,
        )
        target = self.target.render(ctx)
        if self.kind == "mqtt":
            if self.mode == "data":
                ct = ev.content_type if self.protocol == "5" else None
                return Message(
                    target, ev.data or b"", content_type=ct, qos=self.qos, retain=self.retain
                )
            payload, ct, props = encode_mqtt(ev, Mode(self.mode), self.protocol)
            return Message(
                target,
                payload,
                content_type=ct,
                user_properties=props,
                qos=self.qos,
                retain=self.retain,
            )
        if self.kind == "nats":
            headers: dict[str, str]
            if self.mode == "data":
                payload, headers = ev.data or b"", {}
            else:
                payload, headers = encode_nats(ev, Mode(self.mode))
            if self.jetstream:
                # JetStream drops a re-publish of the same event within its window.
                headers["Nats-Msg-Id"] = f"{ev.attrs['source']} {ev.attrs['id']}"
            return Message(target, payload, headers=headers)
        if self.mode == "data":
            ct = ev.content_type
            return Message(
                target, ev.data or b"", headers={"content-type": ct} if ct else {}, content_type=ct
            )
        headers, body = encode_http(ev, Mode(self.mode))
        return Message(target, body, headers=headers, content_type=headers.get("content-type"))


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
    ) -> None:
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
            log.info("%s: resumed", self.rule.name)
        self.paused = None
        self._resume.set()

    async def run(self) -> None:
        try:
            while True:
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
            self._acking = asyncio.create_task(self.outbox.ack(seqs), name=f"{self.rule.name}.ack")

    async def _give_up(self, seq: int, event_id: str | None, reason: str) -> bool:
        """Apply ``on_error.then`` to one event; False if the worker must pause."""
        rule = self.rule
        self.failures.pop(seq, None)
        then = rule.on_error.then
        if then == "pause":
            self.paused = f"event {event_id or seq}: {reason}"
            self.metrics.inc("mesh_egress_paused_total", egress=rule.name)
            log.error(
                "%s: paused on event %s: %s",
                rule.name,
                event_id,
                reason,
                extra={"egress": rule.index, "reason": reason},
            )
            return False
        if then == "discard":
            await self.outbox.ack([seq])
            self.metrics.inc("mesh_discarded_total", egress=rule.name)
            log.warning(
                "%s: event %s discarded: %s",
                rule.name,
                event_id,
                reason,
                extra={"egress": rule.index, "reason": reason},
            )
            return True
        await self.outbox.dead_letter(seq, reason)
        self.metrics.inc("mesh_dead_letters_total", reason="egress failed")
        log.error(
            "%s: event %s dead-lettered: %s",
            rule.name,
            event_id or f"#{seq}",
            reason,
            extra={"egress": rule.index, "reason": reason},
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
        ids: list[str] = []
        for seq, rec in records:
            try:
                env = self.outbox.envelope(seq, rec)
                msg = rule.encode(env)
            except (TemplateError, EventError, LinkProtocolError) as exc:
                # Cannot succeed on retry: the policy's final step applies at once.
                if not await self._give_up(seq, None, getattr(exc, "reason", str(exc))):
                    return None
                continue
            seqs.append(seq)
            msgs.append(msg)
            ids.append(env.event.id)
        if not msgs:
            return None
        results = await bridge.publish(msgs)
        done = [seq for seq, res in zip(seqs, results, strict=True) if res is None]
        await self._ack(done)
        for seq in done:
            self.failures.pop(seq, None)
        if done:
            self.metrics.inc("mesh_egress_events_total", len(done), egress=rule.name)
        delay: float | None = None
        failed = [
            (seq, eid, res)
            for seq, eid, res in zip(seqs, ids, results, strict=True)
            if res is not None
        ]
        if failed:
            self.metrics.inc("mesh_egress_failures_total", len(failed), egress=rule.name)
            _seq, first_id, first = failed[0]
            log.warning(
                "%s: %d of %d publishes failed, first %s: %s",
                rule.name,
                len(failed),
                len(msgs),
                first_id,
                first.reason,
            )
        for seq, eid, res in failed:
            if res.permanent or self._exhausted(seq):
                if not await self._give_up(seq, eid, res.reason):
                    return None
            else:
                wait = res.retry_after if res.retry_after is not None else self.backoff.next()
                delay = wait if delay is None else max(delay, wait)
        return delay
