"""Ingress rules, compiled: from a local broker's message to envelopes (pure).

For each message the first ingress rule (in file order) whose pattern matches
its topic applies. A message that already is a CloudEvent (binary or
structured, per the binding of its protocol) is kept as it is; any other
payload is wrapped into a new CloudEvent from the rule's ``event`` templates.
The mesh topic is the rule's ``mesh_topic`` template, or the topic itself.

The protocol's binding (from its bridge's spec) decides what is a CloudEvent.
:func:`IngressRule.build` is pure; :class:`mesh.runtime.ingress.Ingress` runs
it over batches, routes the results durably and then acknowledges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson

from mesh.core.envelope import Envelope
from mesh.core.errors import EventError, EventTooLarge, InvalidEvent, TemplateError
from mesh.core.event import AttrValue, Event, new_event_id, now_rfc3339, validate_attributes
from mesh.core.message import Message
from mesh.core.templates import RenderContext, Template
from mesh.core.topics import Pattern, TopicSyntax
from mesh.core.tracecontext import adopt, from_message

if TYPE_CHECKING:
    from mesh.config import IngressRule as IngressConfig

__all__ = ["Decoder", "IngressRule", "Rejected", "detect_content_type"]


@dataclass(slots=True)
class Rejected:
    """A message that cannot enter the mesh, and why."""

    reason: str
    index: int | None = None  # position in a batch
    too_large: bool = False
    no_rule: bool = False  # no ingress rule matches its topic
    schema: bool = False  # its data fails a JSON Schema of schemas: (mesh.core.schemas)

    @property
    def code(self) -> str:
        """A short label for metrics: too_large, no_rule, schema or invalid."""
        if self.too_large:
            return "too_large"
        if self.no_rule:
            return "no_rule"
        return "schema" if self.schema else "invalid"


class Decoder(Protocol):
    """The decoding half of a protocol's CloudEvents binding."""

    def decode(self, message: Message) -> list[Event | InvalidEvent] | None: ...


def detect_content_type(payload: bytes) -> str:
    """JSON if it parses, text if it is UTF-8, bytes otherwise."""
    if payload[:1] in b'{["-0123456789tfn' and payload:
        try:
            orjson.loads(payload)
            return "application/json"
        except orjson.JSONDecodeError:
            pass
    try:
        payload.decode("utf-8")
        return "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        return "application/octet-stream"


class IngressRule:
    """A compiled ingress rule."""

    def __init__(
        self,
        index: int,
        cfg: IngressConfig,
        *,
        node_id: str,
        max_size: int,
        syntax: TopicSyntax,
        binding: Decoder,
    ) -> None:
        self.index = index
        self.broker = cfg.from_
        self.syntax = syntax
        self.binding = binding
        self.topic = cfg.topic
        self.pattern = Pattern.compile(syntax.to_mesh(cfg.topic))
        self.node_id = node_id
        self.max_size = max_size
        n = self.pattern.wildcards
        self.mesh_topic = (
            Template(cfg.mesh_topic, max_capture=n, attributes=False) if cfg.mesh_topic else None
        )
        ev = cfg.event
        tmpl: dict[str, Template] = {}
        if ev is not None:
            for key in ("type", "source", "subject", "id", "dataschema", "datacontenttype"):
                value = getattr(ev, key)
                if value is not None:
                    tmpl[key] = Template(value, max_capture=n, attributes=False)
            for ext, value in ev.extensions.items():
                tmpl[ext] = Template(value, max_capture=n, attributes=False)
        else:
            tmpl["type"] = Template("mesh.message", attributes=False)
            tmpl["source"] = Template("/{node}/{topic}", attributes=False)
        self.templates = tmpl

    def captures(self, topic: str) -> tuple[str, ...] | None:
        return self.pattern.match(self.syntax.split(topic))

    def build(self, msg: Message, captures: tuple[str, ...]) -> list[Envelope | Rejected]:
        """Turn one message into envelopes (several for an HTTP batch)."""
        size = len(msg.payload)
        if size > self.max_size:
            return [Rejected(str(EventTooLarge(size, self.max_size)), too_large=True)]
        ctx = RenderContext(
            captures=captures, node=self.node_id, topic=msg.topic, payload=msg.payload
        )
        try:
            events = self.binding.decode(msg)
            if events is None:
                events = [self._wrap(msg, ctx)]
            mesh_topic = (
                self.mesh_topic.render(ctx)
                if self.mesh_topic is not None
                else self.syntax.mesh_topic(msg.topic)
            )
        except (EventError, TemplateError) as exc:
            return [Rejected(_reason(exc))]
        # A W3C trace context beside the event (a header, a user property) goes with it.
        trace = from_message(msg) if msg.headers or msg.user_properties else None
        out: list[Envelope | Rejected] = []
        for i, ev in enumerate(events):
            if isinstance(ev, EventError):
                out.append(Rejected(_reason(ev), i))
                continue
            if trace is not None:
                adopt(ev.attrs, trace)
            if ev.size() > self.max_size:
                out.append(Rejected(str(EventTooLarge(ev.size(), self.max_size)), i, True))
            else:
                out.append(Envelope(ev, mesh_topic, self.node_id))
        return out

    def _wrap(self, msg: Message, ctx: RenderContext) -> Event:
        attrs: dict[str, AttrValue] = {"specversion": "1.0"}
        for key, tmpl in self.templates.items():
            attrs[key] = tmpl.render(ctx)
        if "id" not in attrs:
            # A redelivered message keeps the id it had the first time, when the
            # protocol names it; the dedup window then drops the second copy.
            attrs["id"] = stable_event_id(msg.identity) if msg.identity else new_event_id()
        attrs["time"] = now_rfc3339()
        if "datacontenttype" not in attrs:
            attrs["datacontenttype"] = msg.content_type or detect_content_type(msg.payload)
        validate_attributes(attrs)
        return Event(attrs, msg.payload)


def stable_event_id(identity: str) -> str:
    """The event id of a raw message with this protocol identity: the same every time."""
    return (
        "m-"
        + hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    )


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, EventError | TemplateError) else str(exc)
