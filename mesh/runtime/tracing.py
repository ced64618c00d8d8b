"""OpenTelemetry spans for events that carry a W3C trace context (optional).

With ``tracing:`` configured and ``opentelemetry-sdk`` installed, a node
emits, following the OpenTelemetry messaging conventions:

- ``receive <mesh topic>`` (CONSUMER) when its ingress made an event durable,
  starting when the event arrived;
- ``process <mesh topic>`` (CONSUMER) when it made durable an event a peer
  passed on;
- ``send <target>`` (PRODUCER) when a local broker confirmed an event.

Every span is a child of the event's ``traceparent`` (the publisher's
context, which the event keeps unchanged across hops), so the spans of one
event on every node it crossed fall into the publisher's trace. Events
without a trace context get no spans. Without ``tracing:`` this module is
not imported at all, and nothing is done per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mesh.core.envelope import Envelope
from mesh.core.errors import ConfigError, ConfigErrors
from mesh.core.tracecontext import TRACEPARENT, TRACESTATE

if TYPE_CHECKING:
    from mesh.config import Tracing

__all__ = ["Spans", "start_spans"]

log = logging.getLogger(__name__)


class Spans:
    """A node's tracer: its own provider, so several nodes in one process stay apart."""

    def __init__(self, provider: Any, node_id: str, out: Any = None) -> None:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.node_id = node_id
        self._out = out  # the file a file exporter writes, closed at shutdown
        self.tracer = provider.get_tracer("mesh")
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {"receive": SpanKind.CONSUMER, "process": SpanKind.CONSUMER}
        self._send = SpanKind.PRODUCER

    def record(
        self,
        operation: str,
        envs: Iterable[Envelope],
        *,
        system: str,
        destination: str | None = None,
        start: float | None = None,
    ) -> None:
        """One span per event with a trace context: ``operation`` is receive, process or send."""
        end = time.time_ns()
        kind = self._kinds.get(operation, self._send)
        for env in envs:
            attrs = env.event.attrs
            parent = attrs.get(TRACEPARENT)
            if type(parent) is not str:
                continue
            carrier = {TRACEPARENT: parent}
            state = attrs.get(TRACESTATE)
            if type(state) is str:
                carrier[TRACESTATE] = state
            ctx = self._propagator.extract(carrier)
            where = destination or env.topic
            began = start if start is not None else env.t_in
            span = self.tracer.start_span(
                f"{operation} {where}",
                context=ctx,
                kind=kind,
                start_time=int(began * 1e9) if began is not None else end,
                attributes={
                    "messaging.system": system,
                    "messaging.operation.type": operation,
                    "messaging.operation.name": operation,
                    "messaging.destination.name": where,
                    "messaging.message.id": str(attrs.get("id", "")),
                    "cloudevents.event_id": str(attrs.get("id", "")),
                    "cloudevents.event_source": str(attrs.get("source", "")),
                    "cloudevents.event_type": str(attrs.get("type", "")),
                    "mesh.node": self.node_id,
                    "mesh.topic": env.topic,
                    "mesh.origin": env.origin,
                },
            )
            span.end(end_time=end)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is batched
        if self._out is not None:
            self._out.close()


def start_spans(settings: Tracing, node_id: str) -> Spans:
    """A tracer for ``settings``; ConfigErrors naming what is missing when it cannot be made."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        why = ConfigError(
            "tracing",
            "configured, but opentelemetry-sdk is not installed",
            "pip install 'event-mesh-gateway[tracing]'",
        )
        raise ConfigErrors("tracing", [why]) from exc
    resource = Resource.create(
        {"service.name": settings.service_name, "service.instance.id": node_id}
    )
    provider = TracerProvider(resource=resource)
    exporter: Any
    out = None
    if settings.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            why = ConfigError(
                "tracing.exporter",
                "otlp needs opentelemetry-exporter-otlp-proto-http",
                "pip install opentelemetry-exporter-otlp-proto-http",
            )
            raise ConfigErrors("tracing", [why]) from exc
        exporter = OTLPSpanExporter(endpoint=settings.endpoint)
    elif settings.exporter == "file":
        assert settings.path is not None  # the model requires it
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        out = open(settings.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by shutdown
        exporter = ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    else:
        exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    log.info("tracing: spans to %s (%s)", settings.exporter, settings.service_name)
    return Spans(provider, node_id, out)
