"""The CloudEvents MQTT protocol binding, MQTT 3.1.1 and 5.0 (reference §4).

MQTT 3.1.1 has no per-message metadata, so it carries structured mode only:
the payload is a JSON-format event, recognised as a JSON object with a
top-level ``specversion`` member.

MQTT 5.0:

* a Content Type property starting with ``application/cloudevents`` selects
  structured mode (a format other than JSON is treated as binary);
* otherwise, a ``specversion`` User Property selects binary mode: the Content
  Type property is ``datacontenttype`` and every other attribute is a User
  Property named exactly like the attribute (no ``ce-`` prefix) whose value is
  the raw canonical string (no percent-encoding); the payload is the data;
* otherwise, without a Content Type, a JSON payload that is a JSON-format
  event is accepted as structured (tolerant of 3.1.1-style publishers);
* anything else is not a CloudEvent (None).

MQTT has no batch mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mesh.core.codec import Mode
from mesh.core.codec.headers import canonical_string
from mesh.core.codec.jsonformat import (
    STRUCTURED_CONTENT_TYPE,
    _ce_mode,
    _sniff_structured,
    decode_structured,
    encode_structured,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, Event, validate_attributes

__all__ = ["decode_mqtt", "encode_mqtt"]


def decode_mqtt(
    payload: bytes,
    content_type: str | None,
    user_properties: Sequence[tuple[str, str]],
    protocol: Literal["5", "3.1.1"],
) -> Event | None:
    """Decode a PUBLISH; None means the message is not a CloudEvent (a raw payload).

    A CloudEvent that breaks a rule raises InvalidEvent.  In binary mode the
    Content Type property is authoritative and a ``datacontenttype`` User
    Property (the spec's own example has one) is ignored; it is used only
    when there is no Content Type property.  An attribute given twice as a
    User Property is an error.  An empty Content Type counts as absent.
    """
    if protocol == "3.1.1":
        return _sniff_structured(payload)
    if protocol != "5":
        raise ValueError(f"decode_mqtt: unknown MQTT protocol {protocol!r}")
    content_type = content_type or None
    if content_type is not None and _ce_mode(content_type) is Mode.STRUCTURED:
        return decode_structured(payload)
    attrs: dict[str, AttrValue] = {}
    duplicate: str | None = None
    property_content_type: str | None = None
    for name, value in user_properties:
        if name == "datacontenttype":
            if property_content_type is None:
                property_content_type = value
        elif name in attrs:
            duplicate = name
        else:
            attrs[name] = value
    if "specversion" not in attrs:
        return _sniff_structured(payload) if content_type is None else None
    if duplicate is not None:
        raise InvalidEvent(f"user property {duplicate!r} appears more than once", duplicate)
    if content_type is None:
        content_type = property_content_type or None
    if content_type is not None:
        attrs["datacontenttype"] = content_type
    validate_attributes(attrs)
    return Event(attrs, payload or None)


def encode_mqtt(
    event: Event, mode: Mode, protocol: Literal["5", "3.1.1"]
) -> tuple[bytes, str | None, list[tuple[str, str]]]:
    """Encode an event as ``(payload, content_type, user_properties)``.

    MQTT 3.1.1 supports STRUCTURED only (the content type is then None: there
    is nowhere to put it); BINARY there raises ValueError.  MQTT 5 BINARY puts
    the effective content type in the Content Type property and every other
    attribute, as its canonical string, in a User Property.  An event whose
    content type is the JSON CloudEvents media type would be read back as
    structured, so it is sent in structured mode instead.
    """
    if protocol == "3.1.1":
        if mode == Mode.STRUCTURED:
            return encode_structured(event), None, []
        raise ValueError(f"MQTT 3.1.1 supports structured mode only, not {mode!r}")
    if protocol != "5":
        raise ValueError(f"encode_mqtt: unknown MQTT protocol {protocol!r}")
    if mode == Mode.BINARY:
        content_type = event.content_type
        if _ce_mode(content_type) is not Mode.STRUCTURED:
            properties = [
                (name, canonical_string(value))
                for name, value in event.attrs.items()
                if name != "datacontenttype"
            ]
            data = event.data
            return data if data is not None else b"", content_type, properties
        mode = Mode.STRUCTURED
    if mode == Mode.STRUCTURED:
        return encode_structured(event), STRUCTURED_CONTENT_TYPE, []
    raise ValueError(f"encode_mqtt: unsupported mode {mode!r} (use BINARY or STRUCTURED)")
