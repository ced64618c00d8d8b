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
from collections.abc import Awaitable, Callable
from typing import Literal

from mesh.backoff import Backoff
from mesh.bridge import Bridge, Message
from mesh.codec import Mode, encode_http, encode_mqtt, encode_nats
from mesh.config import EgressRule as EgressConfig
from mesh.config import MeshConfig
from mesh.envelope import Envelope, decode_record
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
        self.policy = cfg.retry
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
            if self.mode == "data":
                return Message(target, ev.data or b"")
            payload, headers = encode_nats(ev, Mode(self.mode))
            return Message(target, payload, headers=headers)
        if self.mode == "data":
            ct = ev.content_type
            return Message(
                target, ev.data or b"", headers={"content-type": ct} if ct else {}, content_type=ct
            )
        headers, body = encode_http(ev, Mode(self.mode))
        return Message(target, body, headers=headers, content_type=headers.get("content-type"))


class EgressWorker:
    """Moves one egress rule's outbox to its broker, acknowledging only confirmed events."""

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
        self.backoff = Backoff(rule.policy.backoff_initial, rule.policy.backoff_max)
        self.attempts: dict[int, int] = {}

    def dead_letter(self, seq: int, reason: str, event_id: str | None) -> None:
        self.metrics.inc("mesh_dead_letters_total", reason="egress failed")
        log.error(
            "%s: event %s dead-lettered: %s",
            self.rule.name,
            event_id or f"#{seq}",
            reason,
            extra={"egress": self.rule.index, "reason": reason},
        )

    async def run(self) -> None:
        while True:
            records = await self.outbox.read(self.batch)
            bridge = await self.bridge()
            async with self.drain.work():
                delay = await self._deliver(bridge, records)
            if delay is not None:
                self.outbox.rewind()
                await asyncio.sleep(delay)
            else:
                self.backoff.reset()

    async def _deliver(self, bridge: Bridge, records: list[tuple[int, bytes]]) -> float | None:
        """Publish one batch; ack what is done; return a retry delay if some failed."""
        rule = self.rule
        done: list[int] = []
        seqs: list[int] = []
        msgs: list[Message] = []
        ids: list[str] = []
        for seq, rec in records:
            try:
                env = decode_record(rec)
                msg = rule.encode(env)
            except (TemplateError, EventError, LinkProtocolError) as exc:
                self.dead_letter(seq, getattr(exc, "reason", str(exc)), None)
                done.append(seq)
                continue
            seqs.append(seq)
            msgs.append(msg)
            ids.append(env.event.id)
        failed = False
        delay: float | None = None
        if msgs:
            results = await bridge.publish(msgs)
            for seq, eid, res in zip(seqs, ids, results, strict=True):
                if res is None:
                    done.append(seq)
                    self.attempts.pop(seq, None)
                    continue
                self.metrics.inc("mesh_egress_failures_total", egress=rule.name)
                n = self.attempts[seq] = self.attempts.get(seq, 0) + 1
                limit = rule.policy.max_attempts
                if res.permanent or (limit and n >= limit):
                    self.dead_letter(seq, res.reason, eid)
                    self.attempts.pop(seq, None)
                    done.append(seq)
                else:
                    failed = True
                    delay = res.retry_after
                    log.warning(
                        "%s: publish of %s failed (attempt %d): %s", rule.name, eid, n, res.reason
                    )
            ok = len(msgs) - sum(1 for r in results if r is not None)
            if ok:
                self.metrics.inc("mesh_egress_events_total", ok, egress=rule.name)
        await self.outbox.ack(done)
        if failed:
            return delay if delay is not None else self.backoff.next()
        return None
