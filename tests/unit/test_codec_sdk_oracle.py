"""The ``cloudevents`` SDK 2.x (``cloudevents.core``) as an independent oracle.

Where the SDK follows the spec, its output must decode with our decoders to
the same event, and our output must parse in the SDK to the same attributes.

SDK deviations we deliberately do NOT share (reference §8), so no test here
compares against them:

* ``from_http`` picks binary mode whenever any ``ce-`` header is present,
  ignoring Content-Type; we decide by Content-Type only, so a structured
  message that also carries ``ce-`` headers is decoded from its body.
* No batch support at all.
* Invalid UTF-8 in percent-decoding becomes U+FFFD; we reject it (``%C0%A0``).
* Quoted-string header values are not unwrapped; we unwrap them.
* ``"subject": null`` raises; we treat every ``null`` attribute as absent.
* ``time`` is invented (now) on parse and on construction; we never invent it
  (``to_sdk`` removes the one the SDK adds).
* Its JSON-like content-type test is case-sensitive and limited to the
  ``application`` and ``text`` top-level types; ours is case-insensitive
  ``*/json`` and ``*/*+json``.
* A ``str`` datum under ``application/json`` is written to a binary body
  without JSON quotes, and a list as its Python repr; we keep data as the
  bytes on the wire, so a JSON string keeps its quotes (reference §2.3).
* A Boolean extension becomes the header ``True``; we write ``true``.
* An explicit ``"data": null`` is lost; we keep it as ``b"null"``.
* An empty binary body and a missing ``Content-Type`` make it guess the data
  type; we never guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.core.codec import (
    Mode,
    decode_http,
    decode_structured,
    encode_http,
    encode_structured,
    from_sdk,
    percent_encode,
    to_sdk,
)
from mesh.core.event import AttrValue, Event

FORMAT = JSONFormat()
TIME = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
TIME_TEXT = "2024-05-01T12:00:00.123000Z"
DATA = {"temp": 21.5, "unit": "C", "ok": True, "tags": ["a", "€"], "nested": {"n": None}}


def sdk_event(**extra: Any) -> CloudEvent:
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/sensors/tn-1",
        "type": "com.example.reading",
        "subject": "Euro € 😀",
        "time": TIME,
        "datacontenttype": "application/json",
        "region": "eu-west",
        **extra,
    }
    return CloudEvent(attrs, DATA)


def our_event(**extra: AttrValue) -> Event:
    attrs: dict[str, AttrValue] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/sensors/tn-1",
        "type": "com.example.reading",
        "subject": "Euro € 😀",
        "time": TIME_TEXT,
        "datacontenttype": "application/json",
        "region": "eu-west",
        **extra,
    }
    return Event(attrs, orjson.dumps(DATA))


def sdk_attrs_as_strings(ce: BaseCloudEvent) -> dict[str, Any]:
    out = dict(ce.get_attributes())
    if isinstance(out.get("time"), datetime):
        out["time"] = out["time"].isoformat().replace("+00:00", "Z")
    return out


# --------------------------------------------------------------------------
# SDK output -> our decoders


def test_sdk_structured_json_decodes_to_the_same_event() -> None:
    ce = sdk_event()
    message = sdk_http.to_structured(ce, FORMAT)
    mode, events = decode_http(dict(message.headers), message.body)
    assert mode is Mode.STRUCTURED
    ev = events[0]
    assert isinstance(ev, Event)
    assert ev.attrs == sdk_attrs_as_strings(ce)
    assert ev.data is not None and orjson.loads(ev.data) == DATA


def test_sdk_binary_http_decodes_to_the_same_event() -> None:
    ce = sdk_event()
    message = sdk_http.to_binary(ce, FORMAT)
    mode, events = decode_http({k.lower(): v for k, v in message.headers.items()}, message.body)
    assert mode is Mode.BINARY
    ev = events[0]
    assert isinstance(ev, Event)
    assert ev.attrs == sdk_attrs_as_strings(ce)
    assert ev.data is not None and orjson.loads(ev.data) == DATA


def test_sdk_base64_data_decodes_to_the_same_bytes() -> None:
    ce = CloudEvent({"id": "1", "source": "s", "type": "t", "time": TIME}, b"\x00\xffraw")
    ev = decode_structured(FORMAT.write(ce))
    assert ev.data == b"\x00\xffraw"
    assert ev.content_type is None


text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text)
def test_percent_encoding_matches_the_sdk(value: str) -> None:
    ce = CloudEvent({"id": "1", "source": "s", "type": "t", "time": TIME, "ext": value})
    header = sdk_http.to_binary(ce, FORMAT).headers["ce-ext"]
    assert percent_encode(value) == header
    mode, events = decode_http(dict(sdk_http.to_binary(ce, FORMAT).headers), b"")
    assert mode is Mode.BINARY
    ev = events[0]
    assert isinstance(ev, Event) and ev.attrs["ext"] == value


# --------------------------------------------------------------------------
# Our output -> the SDK


def test_our_structured_json_parses_in_the_sdk() -> None:
    ev = our_event(count=5, flag=True)
    ce = FORMAT.read(None, encode_structured(ev))
    assert sdk_attrs_as_strings(ce) == ev.attrs  # native int and bool preserved
    assert ce.get_data() == DATA


def test_our_binary_http_parses_in_the_sdk() -> None:
    ev = our_event()
    headers, body = encode_http(ev, Mode.BINARY)
    ce = sdk_http.from_binary(sdk_http.HTTPMessage(headers=headers, body=body), FORMAT)
    assert sdk_attrs_as_strings(ce) == ev.attrs
    assert ce.get_data() == DATA


def test_our_structured_http_parses_in_the_sdk() -> None:
    ev = our_event()
    headers, body = encode_http(ev, Mode.STRUCTURED)
    ce = sdk_http.from_structured(sdk_http.HTTPMessage(headers=headers, body=body), FORMAT)
    assert sdk_attrs_as_strings(ce) == ev.attrs


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text, text)
def test_our_binary_headers_parse_in_the_sdk(subject: str, ext: str) -> None:
    ev = Event(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "subject": subject, "x": ext}
    )
    headers, body = encode_http(ev, Mode.BINARY)
    ce = sdk_http.from_binary(sdk_http.HTTPMessage(headers=headers, body=body), FORMAT)
    attrs = ce.get_attributes()
    assert attrs["subject"] == subject
    assert attrs["x"] == ext


# --------------------------------------------------------------------------
# to_sdk / from_sdk


def test_to_sdk_maps_attributes_time_and_json_data() -> None:
    ce = to_sdk(our_event(count=5))
    assert isinstance(ce, CloudEvent)
    assert ce.get_time() == TIME
    assert ce.get_extension("count") == 5
    assert ce.get_data() == DATA


def test_to_sdk_does_not_invent_time() -> None:
    ev = Event({"specversion": "1.0", "id": "1", "source": "s", "type": "t"})
    ce = to_sdk(ev)
    assert "time" not in ce.get_attributes()
    assert from_sdk(ce) == ev


def test_to_sdk_text_and_binary_data() -> None:
    base: dict[str, AttrValue] = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    assert to_sdk(Event({**base, "datacontenttype": "text/plain"}, b"hi")).get_data() == "hi"
    assert to_sdk(Event(dict(base), b"\x00")).get_data() == b"\x00"
    assert to_sdk(Event({**base, "datacontenttype": "application/json"}, b"{")).get_data() == b"{"
    # JSON null stays bytes: the SDK cannot tell it from "no data".
    null_event = Event({**base, "datacontenttype": "application/json"}, b"null")
    assert to_sdk(null_event).get_data() == b"null"


def test_round_trips_through_the_sdk() -> None:
    base: dict[str, AttrValue] = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    for ev in [
        our_event(count=5, flag=False),
        Event({**base, "datacontenttype": "text/plain"}, "€".encode()),
        Event(dict(base), b"\x00\x01"),
        Event(dict(base), b'"just a string"', json_implied=True),
        Event(dict(base), b"[1,2]", json_implied=True),
        Event({**base, "time": "2024-05-01T12:00:00+02:00"}),
    ]:
        again = from_sdk(to_sdk(ev))
        assert again == ev
        assert again.json_implied == ev.json_implied
        # ... and through the SDK's own structured JSON, which re-serialises
        # JSON data with its own spacing (kept as it wrote it).
        via_json = decode_structured(FORMAT.write(to_sdk(ev)))
        assert via_json.attrs == ev.attrs
        assert via_json.content_type == ev.content_type
        if ev.content_type is not None and "json" in ev.content_type and ev.data:
            assert via_json.data is not None
            assert orjson.loads(via_json.data) == orjson.loads(ev.data)
        else:
            assert via_json.data == ev.data


def test_from_sdk_event_built_by_the_sdk() -> None:
    ev = from_sdk(sdk_event())
    assert ev == our_event()
