"""Ingress: runs compiled ingress rules over batches of deliveries, routes the
results durably in one group commit, and only then acknowledges the broker."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mesh.config import MeshConfig
from mesh.core.envelope import Envelope
from mesh.core.ingress import IngressRule, Rejected
from mesh.core.message import Message
from mesh.plugins import Delivery
from mesh.runtime.metrics import Metrics
from mesh.runtime.router import Router
from mesh.runtime.store import DeadLetter

__all__ = ["Ingress"]

log = logging.getLogger(__name__)


class Ingress:
    """Runs ingress rules over batches of deliveries and acknowledges after commit."""

    def __init__(self, config: MeshConfig, router: Router, metrics: Metrics) -> None:
        self.router = router
        self.store = router.outboxes.store
        self.metrics = metrics
        self.rules = [IngressRule(i, r, config) for i, r in enumerate(config.ingress)]

    def rules_for(self, broker: str) -> list[IngressRule]:
        return [r for r in self.rules if r.broker == broker]

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
            return [Rejected(f"no ingress rule of broker {broker!r} matches topic {msg.topic!r}")]
        rule, caps = found
        return rule.build(msg, caps)

    def reject(self, broker: str, msg: Message, why: Rejected) -> DeadLetter:
        """Count and log a rejected message; return its dead-letter entry."""
        self.metrics.inc("mesh_ingress_rejected_total", broker=broker)
        self.metrics.inc("mesh_dead_letters_total", reason="invalid event")
        log.warning(
            "rejected message from %s on %r: %s",
            broker,
            msg.topic,
            why.reason,
            extra={"broker": broker, "topic": msg.topic},
        )
        meta = {
            "broker": broker,
            "topic": msg.topic,
            "content_type": msg.content_type,
            "headers": dict(msg.headers),
            "user_properties": [list(p) for p in msg.user_properties],
            "batch_index": why.index,
        }
        return DeadLetter(why.reason, f"ingress:{broker}", "message", msg.payload, meta)

    async def accept(self, broker: str, deliveries: Sequence[Delivery]) -> None:
        """Build, route durably, dead-letter what is invalid, then ack every delivery."""
        envs: list[Envelope] = []
        dead: list[DeadLetter] = []
        for d in deliveries:
            for r in self.build(broker, d.message):
                if isinstance(r, Rejected):
                    dead.append(self.reject(broker, d.message, r))
                else:
                    envs.append(r)
        await self._commit(broker, envs, dead)
        for d in deliveries:
            await d.ack()

    async def accept_http(
        self, broker: str, topic: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[list[Envelope], list[Rejected]]:
        """HTTP ingress: route what is valid durably; return what was accepted and rejected."""
        msg = Message(topic, body, headers, headers.get("content-type"))
        envs: list[Envelope] = []
        rejected: list[Rejected] = []
        dead: list[DeadLetter] = []
        for r in self.build(broker, msg):
            if isinstance(r, Rejected):
                dead.append(self.reject(broker, msg, r))
                rejected.append(r)
            else:
                envs.append(r)
        await self._commit(broker, envs, dead)
        return envs, rejected

    async def _commit(self, broker: str, envs: list[Envelope], dead: list[DeadLetter]) -> None:
        """Route the valid events durably and dead-letter the invalid ones."""
        if envs:
            await self.router.route(envs)
            self.metrics.inc("mesh_ingress_events_total", len(envs), broker=broker)
        if dead:
            await self.store.dead_letter(dead)
