"""The CloudEvents NATS protocol binding (reference §5).

Released v1.0.2 defines structured mode only (NATS had no headers); the
1.0.3-wip text adds binary mode with NATS headers (server 2.2 or newer).
Decoding, with header names compared case-insensitively:

* a ``Content-Type`` header starting with ``application/cloudevents`` selects
  structured mode (a format other than JSON is treated as binary);
* otherwise a ``ce-specversion`` header selects binary mode: **every**
  attribute, ``datacontenttype`` included, is a ``ce-<name>`` header,
  percent-encoded exactly as in HTTP; ``Content-Type`` is not the data's media
  type in NATS and is ignored; the payload is the data;
* otherwise, when there is neither a ``ce-specversion`` nor a
  ``Content-Type`` header (v1.0.2 publishers send no headers at all), a
  payload that is a JSON-format event is accepted as structured;
* anything else is not a CloudEvent (None).

NATS has no batch mode.
"""

from __future__ import annotations

from collections.abc import Mapping

from mesh.core.codec import Mode
from mesh.core.codec.headers import _decode_values, _header_plan, canonical_string, percent_encode
from mesh.core.codec.jsonformat import (
    STRUCTURED_CONTENT_TYPE,
    _ce_mode,
    _sniff_structured,
    decode_structured,
    encode_structured,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import Event, validate_attributes

__all__ = ["decode_nats", "encode_nats"]


def decode_nats(payload: bytes, headers: Mapping[str, str] | None) -> Event | None:
    """Decode a NATS message; None means it is not a CloudEvent (a raw payload).

    A CloudEvent that breaks a rule raises InvalidEvent; so does a binary
    message with two ``ce-`` headers that differ only in case.
    """
    if not headers:
        return _sniff_structured(payload)
    plan = _header_plan(headers)
    content_type = (headers[plan.content_type] or None) if plan.content_type else None
    if content_type is not None and _ce_mode(content_type) is Mode.STRUCTURED:
        return decode_structured(payload)
    if "specversion" not in plan.attrs:
        return _sniff_structured(payload) if content_type is None else None
    if plan.duplicate is not None:
        raise InvalidEvent(f"header ce-{plan.duplicate} appears more than once", plan.duplicate)
    attrs, joined = _decode_values(plan, headers)
    validate_attributes(attrs, names_ok=plan.names_ok, joined=joined)
    return Event(attrs, payload or None)


def encode_nats(event: Event, mode: Mode) -> tuple[bytes, dict[str, str]]:
    """Encode an event as NATS ``(payload, headers)`` in BINARY or STRUCTURED mode.

    Binary mode writes every attribute as a percent-encoded ``ce-`` header,
    ``ce-datacontenttype`` included (the implied ``application/json`` of a
    JSON-format event without ``datacontenttype`` is written explicitly), and
    no ``Content-Type``.  Structured mode writes
    ``Content-Type: application/cloudevents+json; charset=utf-8``.
    """
    if mode == Mode.BINARY:
        headers = {
            "ce-" + name: percent_encode(canonical_string(value))
            for name, value in event.attrs.items()
        }
        if "datacontenttype" not in event.attrs:
            content_type = event.content_type
            if content_type is not None:
                headers["ce-datacontenttype"] = percent_encode(content_type)
        data = event.data
        return data if data is not None else b"", headers
    if mode == Mode.STRUCTURED:
        return encode_structured(event), {"Content-Type": STRUCTURED_CONTENT_TYPE}
    raise ValueError(f"encode_nats: unsupported mode {mode!r} (use BINARY or STRUCTURED)")
