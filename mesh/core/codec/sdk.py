"""Conversion between :class:`mesh.core.event.Event` and the ``cloudevents`` SDK 2.x.

The SDK's v2 API lives in ``cloudevents.core``; its CloudEvents 1.0 event
class is :class:`cloudevents.core.v1.event.CloudEvent` (attributes dict plus
``data`` as ``dict | str | bytes | None``; ``time`` must be a timezone-aware
``datetime``).  The mapping:

* ``time``: RFC 3339 string <-> aware ``datetime`` (a ``+00:00`` offset is
  written back as ``Z``; fractional seconds come back in Python's 6-digit
  form).  The SDK adds ``time = now`` to every event it builds; ``to_sdk``
  removes it again when the event had no ``time``, since a gateway should not
  invent attributes.
* ``data`` to the SDK: with a JSON-like content type (or ``json_implied``)
  and a valid JSON document, the parsed value (``dict``, ``list``, ``str``,
  number, ...), except ``null``, which the SDK cannot tell from "no data" and
  so stays bytes; with another content type and valid UTF-8, a ``str``;
  otherwise the bytes.
* ``data`` from the SDK: ``bytes`` as is; a ``str`` under a non-JSON content
  type as its UTF-8 bytes; anything else (a JSON value, including a ``str``
  under a JSON-like or absent content type) as ``orjson.dumps(value)``, with
  ``json_implied`` when there is no ``datacontenttype``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent

from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, Event, is_json_media_type, validate_attributes

__all__ = ["from_sdk", "to_sdk"]


def to_sdk(event: Event) -> CloudEvent:
    """The event as an SDK v1.0 ``CloudEvent`` (see the module docstring)."""
    attrs: dict[str, Any] = dict(event.attrs)
    time = attrs.get("time")
    if isinstance(time, str):
        try:
            attrs["time"] = datetime.fromisoformat(time)
        except ValueError:
            raise InvalidEvent(f"attribute 'time': {time!r} is not an RFC 3339 timestamp") from None
    data: Any = event.data
    content_type = event.content_type
    if data is not None and content_type is not None:
        if is_json_media_type(content_type):
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
            else:
                if value is not None:
                    data = value
        else:
            with contextlib.suppress(UnicodeDecodeError):
                data = data.decode("utf-8")
    try:
        ce = CloudEvent(attrs, data)
    except (BaseCloudEventException, ValueError, TypeError) as exc:
        raise InvalidEvent(f"the SDK rejects the event: {exc}") from None
    if "time" not in event.attrs:
        ce.get_attributes().pop("time", None)
    return ce


def from_sdk(ce: BaseCloudEvent) -> Event:
    """An Event from an SDK ``CloudEvent`` (see the module docstring)."""
    attrs: dict[str, AttrValue] = {}
    for name, value in ce.get_attributes().items():
        if value is None:
            continue
        if isinstance(value, datetime):
            text = value.isoformat()
            attrs[name] = text[:-6] + "Z" if text.endswith("+00:00") else text
        elif isinstance(value, str | int):  # bool is an int
            attrs[name] = value
        else:
            raise InvalidEvent(
                f"attribute {name!r} has unsupported type {type(value).__name__}", name
            )
    validate_attributes(attrs)
    content_type = attrs.get("datacontenttype")
    data = ce.get_data()
    if data is None:
        return Event(attrs, None)
    if isinstance(data, bytes | bytearray):
        return Event(attrs, bytes(data))
    if (
        isinstance(data, str)
        and isinstance(content_type, str)
        and not is_json_media_type(content_type)
    ):
        return Event(attrs, data.encode("utf-8"))
    try:
        payload = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(f"SDK event data is not a JSON value: {exc}") from None
    return Event(attrs, payload, json_implied=content_type is None)
