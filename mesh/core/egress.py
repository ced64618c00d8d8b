"""Egress rules, compiled: from an envelope to a broker message in the subscriber's format.

Pure. :meth:`EgressRule.encode` applies the rule's transform, if any
(:mod:`mesh.core.transform`), checks the event as it leaves against the
schemas enforced ``at: egress`` (:mod:`mesh.core.schemas`), renders the
target template from that event and has the protocol's binding (from its
bridge's spec) encode it in the rule's mode: ``binary``, ``structured`` or
``data`` (the payload alone). The worker
that publishes and acknowledges is :class:`mesh.runtime.egress.EgressWorker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mesh.core.codec import Mode
from mesh.core.envelope import Envelope
from mesh.core.event import Event
from mesh.core.message import Message
from mesh.core.schemas import NO_SCHEMAS, Schemas
from mesh.core.templates import RenderContext, Template
from mesh.core.topics import Pattern
from mesh.core.tracecontext import TRACEPARENT, stamp
from mesh.core.transform import Transform

if TYPE_CHECKING:
    from mesh.config import EgressRule as EgressConfig

__all__ = ["EgressRule", "Encoder"]


class Encoder(Protocol):
    """The encoding half of a protocol's CloudEvents binding."""

    def encode(self, event: Event, mode: Mode, topic: str) -> Message: ...


class EgressRule:
    """A compiled egress rule: pattern, filter spec, target template, encoding."""

    def __init__(
        self,
        index: int,
        cfg: EgressConfig,
        *,
        binding: Encoder,
        separator: str = "/",
        dedup_ids: bool = False,
        settings: Any = None,
    ) -> None:
        self.index = index
        self.broker = cfg.to
        self.binding = binding
        self.pattern = Pattern.compile(cfg.topic)
        self.filter = cfg.filter
        self.target = Template(cfg.target, max_capture=self.pattern.wildcards)
        self.mode = cfg.mode
        self._mode = Mode(cfg.mode)
        self.qos = cfg.qos
        self.retain = cfg.retain
        self.separator = separator  # captures are rendered with the target's level separator
        self.dedup_ids = dedup_ids  # the broker drops a re-publish of the same id
        self.on_error = cfg.on_error
        self.name = cfg.rule_name(index)  # an operator name: labels, outbox, logs
        self.transform = (
            Transform(self.name, cfg.transform, max_capture=self.pattern.wildcards)
            if cfg.transform is not None
            else None
        )
        # What a running worker depends on; a change restarts it (see Node.reload).
        self.settings = settings if settings is not None else cfg.model_dump()

    def encode(self, env: Envelope, schemas: Schemas = NO_SCHEMAS) -> Message:
        """Transform, check, render the target and encode the event.

        Raises TemplateError or EventError (TransformError, SchemaViolation):
        each means this event can never be encoded by this rule.
        """
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
        if self.transform is not None:
            ev = self.transform.apply(ev, ctx)
            # The target is rendered from the event as it leaves.
            ctx = RenderContext(
                captures=caps,
                node=env.origin,
                topic=env.topic,
                attrs=ev.attrs,
                payload=ev.data,
                separator=self.separator,
            )
        if schemas:
            schemas.enforce(ev, "egress")
        msg = self.binding.encode(ev, self._mode, self.target.render(ctx))
        msg.qos = self.qos
        msg.retain = self.retain
        if self.dedup_ids:
            msg.dedup_id = f"{ev.attrs['source']} {ev.attrs['id']}"
        if TRACEPARENT in ev.attrs:
            stamp(msg, ev.attrs)
        return msg
