"""W3C trace context carried by events: the CloudEvents distributed-tracing extension (pure).

A ``traceparent`` (and ``tracestate``) reaches a node as a CloudEvent
attribute, an HTTP or NATS header, or an MQTT 5 user property. At ingress it
becomes the event's ``traceparent``/``tracestate`` attributes (an attribute the
event already has wins; a header that is not a valid W3C ``traceparent`` is
ignored, as the W3C spec asks), and the event keeps them across every hop.
At egress they are written in the protocol's own form as well: the W3C
``traceparent``/``tracestate`` headers on HTTP and NATS and MQTT 5 user
properties of those names. In binary mode the attributes are also written as
the CloudEvents binding writes any attribute (``ce-traceparent``; on MQTT 5
that user property *is* the attribute). So a consumer several hops away sees
the publisher's trace id whichever protocol it reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from mesh.core.event import AttrValue
from mesh.core.message import Message

__all__ = ["TRACEPARENT", "TRACESTATE", "adopt", "from_message", "stamp", "valid_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACESTATE = 512  # the W3C spec's limit a receiver must accept
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def valid_traceparent(value: str) -> bool:
    """A W3C ``traceparent`` a receiver may use: known shape, not version ff, ids not zero."""
    return (
        _TRACEPARENT.fullmatch(value) is not None
        and not value.startswith("ff")
        and value[3:35] != "0" * 32
        and value[36:52] != "0" * 16
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # HTTP headers reach us lower-cased; NATS headers keep their case, and the W3C
    # spelling is lower case: two lookups, not a scan of every header per message.
    value = headers.get(name)
    return headers.get(name.capitalize()) if value is None else value


def _property(props: Sequence[tuple[str, str]], name: str) -> str | None:
    for k, v in props:
        if k == name:
            return v
    return None


def from_message(msg: Message) -> tuple[str, str | None] | None:
    """The trace context a protocol message carries outside any CloudEvent, or None."""
    parent: str | None = None
    state: str | None = None
    if msg.headers:
        parent = _header(msg.headers, TRACEPARENT)
        if parent is not None:
            state = _header(msg.headers, TRACESTATE)
    if parent is None and msg.user_properties:
        parent = _property(msg.user_properties, TRACEPARENT)
        if parent is not None:
            state = _property(msg.user_properties, TRACESTATE)
    if parent is None:
        return None
    parent = parent.strip().lower()
    if not valid_traceparent(parent):
        return None
    if state is not None and (len(state) > MAX_TRACESTATE or not state.isprintable()):
        state = None
    return parent, state


def adopt(attrs: dict[str, AttrValue], context: tuple[str, str | None]) -> None:
    """Give an event the message's trace context, unless it has its own."""
    if TRACEPARENT in attrs:
        return
    parent, state = context
    attrs[TRACEPARENT] = parent
    if state:
        attrs[TRACESTATE] = state


def stamp(msg: Message, attrs: Mapping[str, AttrValue]) -> None:
    """Write an event's trace context on an outgoing message in the protocol's form.

    Headers serve HTTP and NATS, user properties MQTT 5; each bridge reads the
    one its protocol has (MQTT 3.1.1 has neither, and ignores both).
    """
    parent = attrs.get(TRACEPARENT)
    if type(parent) is not str:
        return
    state = attrs.get(TRACESTATE)
    state = state if type(state) is str else None
    if _header(msg.headers, TRACEPARENT) is None:
        headers = dict(msg.headers)
        headers[TRACEPARENT] = parent
        if state:
            headers[TRACESTATE] = state
        msg.headers = headers
    if _property(msg.user_properties, TRACEPARENT) is None:
        props = list(msg.user_properties)
        props.append((TRACEPARENT, parent))
        if state and _property(msg.user_properties, TRACESTATE) is None:
            props.append((TRACESTATE, state))
        msg.user_properties = props
