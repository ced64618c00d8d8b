"""The CloudEvents HTTP protocol binding (reference §3).

Mode detection looks only at ``Content-Type`` (batch first, then structured,
else binary), never at the presence of ``ce-`` headers: a structured message
may carry them too, and its body is authoritative.  A binary-mode message is
a CloudEvent only if it has a ``ce-specversion`` header; otherwise it is a
plain HTTP message (:attr:`Mode.RAW`).

Binary mode: ``Content-Type`` is ``datacontenttype``; every other attribute is
a ``ce-<name>`` header whose value is percent-encoded (:mod:`.headers`); a
``ce-datacontenttype`` header is an error; extension values arrive as
strings; the body is the data, unchanged (an empty body is "no data").

Header names are case-insensitive; :func:`encode_http` writes them lower-case.
"""

from __future__ import annotations

from collections.abc import Mapping

from mesh.core.codec import Mode
from mesh.core.codec.headers import _decode_values, _header_plan, canonical_string, percent_encode
from mesh.core.codec.jsonformat import (
    STRUCTURED_CONTENT_TYPE,
    _ce_mode,
    decode_batch,
    decode_structured,
    encode_structured,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import Event, validate_attributes

__all__ = ["decode_http", "encode_http"]


def decode_http(headers: Mapping[str, str], body: bytes) -> tuple[Mode, list[Event | InvalidEvent]]:
    """Decode an HTTP request or response.

    ``headers`` keys should be lower-case; other spellings work too (names
    are compared case-insensitively), but two names that differ only in case
    in one binary-mode CloudEvent are an error.

    Returns ``(Mode.BATCH, [...])`` with one Event or InvalidEvent per batch
    element, ``(Mode.STRUCTURED, [event])``, ``(Mode.BINARY, [event])``, or
    ``(Mode.RAW, [])`` for a message that is not a CloudEvent.  An invalid
    structured or binary event raises InvalidEvent.
    """
    content_type = headers.get("content-type")
    plan = None
    if content_type is None:  # not given in lower case, or absent
        plan = _header_plan(headers)
        if plan.content_type is not None:
            content_type = headers[plan.content_type]
    content_type = content_type or None
    mode = _ce_mode(content_type)
    if mode is Mode.BATCH:
        return Mode.BATCH, decode_batch(body)
    if mode is Mode.STRUCTURED:
        return Mode.STRUCTURED, [decode_structured(body)]
    if plan is None:
        plan = _header_plan(headers)
    if "specversion" not in plan.attrs:
        return Mode.RAW, []
    if "datacontenttype" in plan.attrs:
        raise InvalidEvent(
            "header ce-datacontenttype is not allowed in HTTP binary mode "
            "(Content-Type carries datacontenttype)",
            "datacontenttype",
        )
    if plan.duplicate is not None:
        raise InvalidEvent(f"header ce-{plan.duplicate} appears more than once", plan.duplicate)
    attrs, joined = _decode_values(plan, headers)
    if content_type is not None:
        attrs["datacontenttype"] = content_type
        if joined is not None:
            joined += content_type
    validate_attributes(attrs, names_ok=plan.names_ok, joined=joined)
    return Mode.BINARY, [Event(attrs, body or None)]


def encode_http(event: Event, mode: Mode) -> tuple[dict[str, str], bytes]:
    """Encode an event as HTTP ``(headers, body)`` in BINARY or STRUCTURED mode.

    Header names are lower-case.  In binary mode ``content-type`` is the
    event's effective content type (the implied ``application/json`` of a
    JSON-format event without ``datacontenttype`` included) and is absent when
    the event has none.  An event whose content type is itself a JSON
    CloudEvents media type (``application/cloudevents+json``, or the batch
    type) cannot be sent in binary mode, because every receiver would read it
    as structured; such an event is sent in structured mode instead.
    """
    if mode == Mode.BINARY:
        content_type = event.content_type
        if _ce_mode(content_type) is Mode.BINARY:
            headers = {
                "ce-" + name: percent_encode(canonical_string(value))
                for name, value in event.attrs.items()
                if name != "datacontenttype"
            }
            if content_type is not None:
                headers["content-type"] = content_type
            data = event.data
            return headers, data if data is not None else b""
        mode = Mode.STRUCTURED
    if mode == Mode.STRUCTURED:
        return {"content-type": STRUCTURED_CONTENT_TYPE}, encode_structured(event)
    raise ValueError(f"encode_http: unsupported mode {mode!r} (use BINARY or STRUCTURED)")
