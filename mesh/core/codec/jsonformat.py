"""The CloudEvents JSON event format: single events and batches (reference §2).

Writing ``data`` (§2.1), with the event's *effective* content type
(``Event.content_type``: the attribute, or ``application/json`` when
``json_implied``):

* no data -> no ``data`` member;
* JSON-like content type and the bytes are a valid JSON document -> ``"data"``
  holds that document, embedded byte for byte (``orjson.Fragment``);
* other content type present and the bytes are valid UTF-8 -> ``"data"`` is a
  JSON string;
* anything else -> ``"data_base64"``.  Without a content type no
  ``datacontenttype`` is added.

Reading ``data`` (§2.2): ``data_base64`` -> decoded bytes; ``data`` with a
JSON-like or absent content type -> the JSON text of the member exactly as it
arrived (a JSON string keeps its quotes, ``"data": null`` becomes ``b"null"``,
and an absent ``datacontenttype`` sets ``json_implied``); ``data`` with any
other content type must be a string and becomes its UTF-8 bytes.  Big
integers, number spellings (``1.50``), escapes, key order and whitespace
inside the data document survive, because its text is never re-serialised:
:mod:`mesh.core.codec.jsontext` cuts it out of the original
bytes next to the orjson parse, which reads the attributes (duplicate
``data`` members are the exception: then the value orjson read is
re-serialised).

Attribute members: ``null`` means absent; strings, integers (32-bit) and
booleans are accepted; floats, objects and arrays are rejected.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

from mesh.core.codec import Mode
from mesh.core.codec.jsontext import BatchData, event_data
from mesh.core.errors import InvalidEvent
from mesh.core.event import (
    _KNOWN_NAMES,
    AttrValue,
    Event,
    is_json_media_type,
    validate_attributes,
)

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "decode_batch",
    "decode_structured",
    "encode_batch",
    "encode_structured",
]

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json; charset=utf-8"

_MISSING: Final[Any] = object()
_OBJECT_START = re.compile(rb"[ \t\r\n]*\{")
_SCALAR_TYPES: Final = frozenset({str, int, bool})
_BACKSLASH: Final = ord("\\")  # an int: `int in bytes` is one memchr


# --------------------------------------------------------------------------
# Encoding


def _to_object(event: Event) -> dict[str, Any]:
    """The JSON object of one event, ready for ``orjson.dumps``."""
    obj: dict[str, Any] = dict(event.attrs)
    data = event.data
    if data is not None:
        ct = event.content_type
        if ct is not None:
            if _is_json(ct):
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    pass  # not a JSON document: data_base64 below
                else:
                    obj["data"] = orjson.Fragment(data)
                    return obj
            else:
                try:
                    obj["data"] = data.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # not text: data_base64 below
                else:
                    return obj
        obj["data_base64"] = base64.b64encode(data).decode("ascii")
    return obj


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(f"event cannot be encoded as JSON: {exc}") from None


def encode_structured(event: Event) -> bytes:
    """The event in the JSON format (the body of a structured-mode message)."""
    return _dumps(_to_object(event))


def encode_batch(events: Iterable[Event]) -> bytes:
    """A JSON batch: an array of JSON-format events (``[]`` when empty)."""
    return _dumps([_to_object(e) for e in events])


# --------------------------------------------------------------------------
# Decoding


def decode_structured(body: bytes) -> Event:
    """Decode one JSON-format event; raise InvalidEvent if it is not valid."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"structured event is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise InvalidEvent(f"structured event must be a JSON object, not {_json_type(obj)}")
    return _from_object(obj, _BACKSLASH not in body, body, 0)


def decode_batch(body: bytes) -> list[Event | InvalidEvent]:
    """Decode a JSON batch; each element is decoded independently.

    A bad element yields its InvalidEvent in its place (the reason is
    prefixed with ``batch element <index>``) and never loses the others.
    A body that is not a JSON array raises InvalidEvent.
    """
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"batch is not valid JSON: {exc}") from None
    if type(items) is not list:
        raise InvalidEvent(f"batch must be a JSON array, not {_json_type(items)}")
    c0_free = _BACKSLASH not in body
    text = BatchData(body, not c0_free)
    out: list[Event | InvalidEvent] = []
    for index, item in enumerate(items):
        if type(item) is not dict:
            reason = f"batch element {index}: must be a JSON object, not {_json_type(item)}"
            out.append(InvalidEvent(reason))
            text.lost()
            continue
        try:
            out.append(_from_object(item, c0_free, text, index))
        except InvalidEvent as exc:
            text.lost()
            out.append(InvalidEvent(f"batch element {index}: {exc.reason}", exc.attribute))
    return out


def _from_object(
    obj: dict[str, Any], c0_free: bool, text: bytes | BatchData, element: int
) -> Event:
    """Build an Event from a parsed JSON object (consumed: it becomes ``attrs``).

    ``c0_free``: the JSON text had no backslash.  JSON strings cannot hold
    raw control characters (orjson rejects them), so then no string in
    ``obj`` contains a C0 control character.  ``text`` is the JSON text of
    the event (``element`` is then unused), or of the batch whose element
    ``element`` it is.
    """
    data = obj.pop("data", _MISSING)
    data_base64 = obj.pop("data_base64", None)
    attrs: dict[str, AttrValue] = obj
    values = obj.values()
    try:
        joined = "".join(values)  # TypeError unless every member is a string
    except TypeError:
        _check_member_types(obj)  # null members are dropped here (absent)
        validate_attributes(attrs)
    else:
        # The fast path of validate_attributes, inline (this is the hot path
        # and the call costs 4%): specversion 1.0, names seen in valid events,
        # the required ones present, only non-empty printable ASCII strings.
        # Anything else goes to validate_attributes, which decides.
        if not (
            c0_free
            and joined.isascii()
            and "\x7f" not in joined
            and obj.get("specversion") == "1.0"
            and _KNOWN_NAMES.issuperset(obj)
            and "id" in obj
            and "source" in obj
            and "type" in obj
            and all(values)
        ):
            validate_attributes(attrs, joined=joined, c0_free=c0_free)

    if data_base64 is not None:
        if data is not _MISSING:
            raise InvalidEvent("'data' and 'data_base64' are mutually exclusive")
        if type(data_base64) is not str:
            raise InvalidEvent(f"data_base64 must be a string, not {_json_type(data_base64)}")
        try:
            payload = base64.b64decode(data_base64, validate=True)
        except ValueError as exc:
            raise InvalidEvent(f"data_base64 is not valid base64: {exc}") from None
        return Event(attrs, payload)
    if data is _MISSING:
        return Event(attrs, None)
    ct = attrs.get("datacontenttype")  # a str or None: validated above
    # _is_json, its cache looked up inline first: this is the hot path.
    if ct is None or _JSON_CACHE.get(ct) or _is_json(ct):  # type: ignore[arg-type]
        if type(text) is bytes:
            payload = event_data(text, not c0_free, data)
        else:
            payload = text.of(element, data)  # type: ignore[union-attr]
        return Event(attrs, payload, ct is None)
    if type(text) is BatchData:
        text.lost()  # its "data" key is not the next element's
    if type(data) is str:
        return Event(attrs, data.encode("utf-8"))
    if data is None:
        # "data": null under a non-JSON content type: no payload (interpretation).
        return Event(attrs, None)
    raise InvalidEvent(
        f"data must be a string for the non-JSON datacontenttype {ct!r}, not {_json_type(data)}",
        "datacontenttype",
    )


def _check_member_types(obj: dict[str, Any]) -> None:
    """Check the attribute members' JSON types; delete ``null`` ones (absent, §2)."""
    nulls: list[str] | None = None
    for name, value in obj.items():
        if type(value) in _SCALAR_TYPES:
            continue
        if value is None:
            if nulls is None:
                nulls = []
            nulls.append(name)
        elif type(value) is float:
            raise InvalidEvent(
                f"attribute {name!r}: {value!r} is not an integer "
                "(attribute numbers must be 32-bit integers)",
                name,
            )
        else:
            raise InvalidEvent(
                f"attribute {name!r} must be a string, integer or boolean, not {_json_type(value)}",
                name,
            )
    if nulls is not None:
        for name in nulls:
            del obj[name]  # null means absent (§2)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _sniff_structured(payload: bytes) -> Event | None:
    """Decode a payload that may be a JSON-format event sent without any marker.

    Used where no content type says so (MQTT 3.1.1, tolerant MQTT 5 and NATS).
    The payload is a CloudEvent only if it is a JSON object with a top-level
    ``specversion`` member; otherwise (including invalid JSON) return None.
    A payload that *is* a CloudEvent but breaks a rule raises InvalidEvent.
    """
    if _OBJECT_START.match(payload) is None or b'"specversion"' not in payload:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or "specversion" not in obj:
        return None
    return _from_object(obj, _BACKSLASH not in payload, payload, 0)


# --------------------------------------------------------------------------
# Media types


_JSON_STRUCTURED = frozenset({"application/cloudevents", "application/cloudevents+json"})
_JSON_BATCH = frozenset({"application/cloudevents-batch", "application/cloudevents-batch+json"})
_CACHE_MAX = 1024
_MODE_CACHE: dict[str | None, Mode] = {None: Mode.BINARY}
_JSON_CACHE: dict[str, bool] = {}


def _ce_mode(content_type: str | None) -> Mode:
    """The mode a Content-Type selects (reference §3.1), for the JSON format only.

    ``Mode.BATCH`` for the JSON batch type, ``Mode.STRUCTURED`` for the JSON
    format, ``Mode.BINARY`` for everything else: no content type, a type that
    does not start with ``application/cloudevents`` (case-insensitive), and a
    CloudEvents format this codec cannot read (``application/cloudevents+avro``),
    which the spec allows to be treated as binary.  A bare
    ``application/cloudevents`` (or ``-batch``) without ``+format`` is taken as
    JSON, the format every implementation must support.  Results are cached
    (content types on one link are few).
    """
    mode = _MODE_CACHE.get(content_type)
    if mode is not None:
        return mode
    assert content_type is not None  # None is always cached
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _JSON_STRUCTURED:
        mode = Mode.STRUCTURED
    elif base in _JSON_BATCH:
        mode = Mode.BATCH
    else:
        mode = Mode.BINARY
    if len(_MODE_CACHE) < _CACHE_MAX:
        _MODE_CACHE[content_type] = mode
    return mode


def _is_json(content_type: str) -> bool:
    """:func:`mesh.core.event.is_json_media_type`, cached."""
    result = _JSON_CACHE.get(content_type)
    if result is None:
        result = is_json_media_type(content_type)
        if len(_JSON_CACHE) < _CACHE_MAX:
            _JSON_CACHE[content_type] = result
    return result
