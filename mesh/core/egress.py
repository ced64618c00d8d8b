"""Egress rules, compiled: from an envelope to a broker message in the subscriber's format (pure).

One :class:`EgressWorker` per egress rule reads its outbox in order, renders
the target template, encodes each event in the rule's mode (``binary``,
``structured`` or ``data``: the payload alone), publishes the batch through
the bridge and acknowledges the outbox only for what the broker confirmed.
A transient failure puts the rest back in line and retries after a backoff;
a permanent one (a template that cannot render, a webhook answering 400)
sends the event to the dead-letter count with its reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mesh.core.codec import Mode, encode_http, encode_mqtt, encode_nats
from mesh.core.envelope import Envelope
from mesh.core.message import Message
from mesh.core.templates import RenderContext, Template
from mesh.core.topics import Pattern

if TYPE_CHECKING:
    from mesh.config import EgressRule as EgressConfig
    from mesh.config import MeshConfig

__all__ = ["EgressRule"]


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
