"""Ingress: runs compiled ingress rules over batches of deliveries, routes the
results durably in one group commit, and only then acknowledges the broker.

Each message is built once (:meth:`mesh.core.ingress.IngressRule.build`):
rejected ones are counted and logged once, dead-lettered, and acknowledged
(they can never succeed), so one bad message never holds up a batch. When
the node cannot take the batch now (:class:`~mesh.core.errors.Overloaded`:
an outbox with ``overflow: block`` or the store is full), nothing is
acknowledged: deliveries that can wait at their broker are kept and tried
again, the others (an HTTP request) are refused at once with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mesh.core.envelope import Envelope
from mesh.core.errors import Overloaded
from mesh.core.ingress import IngressRule, Rejected
from mesh.core.message import Message
from mesh.core.schemas import NO_SCHEMAS, Schemas
from mesh.plugins import Delivery, Outcome
from mesh.runtime.logs import Throttle
from mesh.runtime.metrics import Metrics
from mesh.runtime.router import Router
from mesh.runtime.store import DeadLetter

if TYPE_CHECKING:
    from mesh.runtime.tracing import Spans

LOG_EVERY = 5.0  # seconds between log lines of one kind of rejection from one broker

__all__ = ["Ingress"]

log = logging.getLogger(__name__)
# Headers kept with a dead-lettered message: what says how to read it, never credentials.
_KEPT_HEADERS = ("content-type",)
EXCERPT = 4096  # bytes of an oversize message kept in its dead letter


@dataclass(slots=True)
class _Built:
    delivery: Delivery
    envs: list[Envelope] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class Ingress:
    """Runs ingress rules over batches of deliveries and acknowledges after commit."""

    def __init__(
        self,
        rules: list[IngressRule],
        router: Router,
        metrics: Metrics,
        *,
        spans: Spans | None = None,
        kinds: Mapping[str, str] | None = None,
        schemas: Schemas = NO_SCHEMAS,
    ) -> None:
        self.schemas = schemas  # enforced on what enters here (at: ingress)
        self.spans = spans
        self._throttle = Throttle(LOG_EVERY)  # rejection lines, per (broker, reason)
        self.kinds = kinds or {}  # broker name -> its kind (mqtt, nats, http), for spans
        self.router = router
        self.store = router.outboxes.store
        self.metrics = metrics
        self.rules = rules

    def match(self, broker: str, topic: str) -> tuple[IngressRule, tuple[str, ...]] | None:
        for rule in self.rules:
            if rule.broker == broker:
                caps = rule.captures(topic)
                if caps is not None:
                    return rule, caps
        return None

    def build(self, broker: str, msg: Message) -> list[Envelope | Rejected]:
        found = self.match(broker, msg.topic)
        if found is None:
            why = f"no ingress rule of broker {broker!r} matches topic {msg.topic!r}"
            return [Rejected(why, no_rule=True)]
        rule, caps = found
        built = rule.build(msg, caps)
        if "ingress" in self.schemas.points:
            for i, r in enumerate(built):
                if isinstance(r, Envelope):
                    reason = self.schemas.check(r.event, "ingress")
                    if reason is not None:
                        built[i] = Rejected(reason, i, schema=True)
        return built

    def reject(self, broker: str, msg: Message, why: Rejected) -> DeadLetter:
        """Count and log a rejected message; return its dead-letter entry."""
        self.metrics.inc("mesh_ingress_rejected_total", broker=broker, reason=why.code)
        self.metrics.inc("mesh_dead_letters_total", reason="invalid event")
        # One line per broker and reason every LOG_EVERY seconds, saying how many it
        # held back: a client sending a stream of bad messages cannot flood the log.
        held = self._throttle.allow((broker, why.code))
        if held is not None:
            more = f" (and {held} more rejected since)" if held else ""
            log.warning(
                "rejected message from %s on %r: %s%s",
                broker,
                msg.topic,
                why.reason,
                more,
                extra={"broker": broker, "topic": msg.topic, "reason": why.code},
            )
        headers = {
            _text(k): _text(v)
            for k, v in msg.headers.items()
            if k.lower() in _KEPT_HEADERS or k.lower().startswith("ce-")
        }
        meta = {
            "broker": broker,
            "topic": _text(msg.topic),
            "content_type": _text(msg.content_type) if msg.content_type else None,
            "headers": headers,
            "user_properties": [[_text(k), _text(v)] for k, v in msg.user_properties],
            "batch_index": why.index,
        }
        record = msg.payload
        if why.too_large and len(record) > EXCERPT:
            # What was refused for its size is kept as an excerpt: a client could
            # otherwise fill the dead-letter queue at the rate it can send.
            meta["size"] = len(record)
            meta["excerpt"] = EXCERPT
            record = record[:EXCERPT]
        return DeadLetter(why.reason, f"ingress:{broker}", "message", record, meta)

    async def accept(
        self,
        broker: str,
        deliveries: Sequence[Delivery],
        wait: Callable[[Overloaded], Awaitable[None]] | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        """Build, dead-letter what is invalid, route durably, then ack every delivery.

        While the node is overloaded, held deliveries are tried again after
        ``wait(exc)``; the others are refused at once (``nack`` with the reason).
        """
        items: list[_Built] = []
        now = time.time()  # the ingress time, carried to every egress for its latency
        for d in deliveries:
            b = _Built(d)
            for r in self.build(broker, d.message):
                if isinstance(r, Rejected):
                    b.rejected.append(r)
                    b.dead.append(self.reject(broker, d.message, r))
                else:
                    r.t_in = now
                    b.envs.append(r)
            items.append(b)
        dead_done = False
        while True:
            try:
                if not dead_done:
                    dead = [e for b in items for e in b.dead]
                    if dead:
                        await self.store.dead_letter(dead)
                    dead_done = True
                envs = [e for b in items for e in b.envs]
                if envs:
                    await self.router.route(envs)
                break
            except Overloaded as exc:
                # Nothing of this batch was acknowledged. Sources that cannot wait
                # are refused now; the broker keeps the others until we try again.
                stop = stopping is not None and stopping.is_set()
                for b in items:
                    if stop or not b.delivery.hold:
                        await b.delivery.nack(exc)
                items = [b for b in items if b.delivery.hold and not stop]
                if not items:
                    return
                log.debug("broker %s: %s; waiting", broker, exc)
                if wait is None:
                    await asyncio.sleep(exc.retry_after)
                else:
                    await wait(exc)
        accepted = sum(len(b.envs) for b in items)
        if accepted:
            self.metrics.inc("mesh_ingress_events_total", accepted, broker=broker)
            if self.spans is not None:
                envs = [e for b in items for e in b.envs]
                self.spans.record("receive", envs, system=self.kinds.get(broker, broker))
        for b in items:
            d = b.delivery
            if d.wants_outcome:
                await d.ack(Outcome([e.event.id for e in b.envs], b.rejected))
            else:
                await d.ack()


def _text(value: str) -> str:
    """``value`` as valid UTF-8 text (a header may carry bytes that are not)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
