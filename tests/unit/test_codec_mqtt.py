"""The MQTT binding, 3.1.1 and 5.0: reference §4 as focused tests."""

from __future__ import annotations

import orjson
import pytest

from mesh.core.codec import (
    STRUCTURED_CONTENT_TYPE,
    Mode,
    decode_mqtt,
    encode_mqtt,
    encode_structured,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, Event

BASE: dict[str, AttrValue] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/sensors/tn-1",
    "type": "com.example.reading",
}
PROPS = [(k, str(v)) for k, v in BASE.items()]
STRUCTURED = orjson.dumps({**BASE, "data": {"t": 1}})


def event(data: bytes | None = None, *, json_implied: bool = False, **attrs: AttrValue) -> Event:
    return Event({**BASE, **attrs}, data, json_implied=json_implied)


# --------------------------------------------------------------------------
# MQTT 3.1.1 (§4.1): structured only


def test_311_structured_payload() -> None:
    ev = decode_mqtt(STRUCTURED, None, [], "3.1.1")
    assert ev == Event(dict(BASE), b'{"t":1}', json_implied=True)


def test_311_leading_whitespace_is_allowed() -> None:
    assert decode_mqtt(b" \r\n\t" + STRUCTURED, None, [], "3.1.1") is not None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"21.5",
        b"hello specversion",
        b'{"temp": 21.5}',
        b'[{"specversion": "1.0"}]',
        b'{"nested": {"specversion": "1.0"}}',
        b'{"specversion": "1.0", broken',
        b'\xff{"specversion"',
    ],
)
def test_311_payloads_that_are_not_cloudevents_are_raw(payload: bytes) -> None:
    assert decode_mqtt(payload, None, [], "3.1.1") is None


def test_311_invalid_cloudevent_raises() -> None:
    with pytest.raises(InvalidEvent, match="missing required attribute 'id'"):
        decode_mqtt(b'{"specversion": "1.0", "source": "s", "type": "t"}', None, [], "3.1.1")


def test_311_encode_is_structured_without_content_type() -> None:
    ev = event(b"[1]", datacontenttype="application/json")
    payload, content_type, props = encode_mqtt(ev, Mode.STRUCTURED, "3.1.1")
    assert payload == encode_structured(ev)
    assert content_type is None
    assert props == []
    assert decode_mqtt(payload, content_type, props, "3.1.1") == ev


def test_311_binary_raises() -> None:
    with pytest.raises(ValueError, match=r"3\.1\.1"):
        encode_mqtt(event(), Mode.BINARY, "3.1.1")


# --------------------------------------------------------------------------
# MQTT 5 mode detection (§4.2)


@pytest.mark.parametrize(
    "ct", [STRUCTURED_CONTENT_TYPE, "application/cloudevents+json", "APPLICATION/CLOUDEVENTS+JSON"]
)
def test_5_structured_from_content_type(ct: str) -> None:
    ev = decode_mqtt(STRUCTURED, ct, [], "5")
    assert ev is not None and ev.attrs == BASE


def test_5_structured_with_user_properties_uses_the_payload() -> None:
    props = [("specversion", "1.0"), ("id", "prop-id"), ("source", "/p"), ("type", "p")]
    ev = decode_mqtt(STRUCTURED, "application/cloudevents+json", props, "5")
    assert ev is not None and ev.attrs == BASE


def test_5_invalid_structured_raises() -> None:
    with pytest.raises(InvalidEvent):
        decode_mqtt(b"[]", "application/cloudevents+json", [], "5")


def test_5_unknown_cloudevents_format_is_binary() -> None:
    ev = decode_mqtt(b"\x02avro", "application/cloudevents+avro", PROPS, "5")
    assert ev is not None
    assert ev.attrs["datacontenttype"] == "application/cloudevents+avro"
    assert ev.data == b"\x02avro"
    assert decode_mqtt(b"\x02avro", "application/cloudevents+avro", [], "5") is None


def test_5_without_specversion_property_and_with_a_content_type_is_raw() -> None:
    props = [("id", "1"), ("x-trace", "abc")]
    assert decode_mqtt(STRUCTURED, "application/json", props, "5") is None
    assert decode_mqtt(b"plain", "text/plain", [], "5") is None


def test_5_json_cloudevent_without_content_type_is_accepted_as_structured() -> None:
    ev = decode_mqtt(STRUCTURED, None, [("x-trace", "abc")], "5")
    assert ev is not None and ev.attrs == BASE
    assert decode_mqtt(STRUCTURED, "", [], "5") is not None  # empty = absent


def test_5_raw_payload_without_anything_is_raw() -> None:
    assert decode_mqtt(b"21.5", None, [], "5") is None
    assert decode_mqtt(b"21.5", None, [("Bad Name", "x"), ("id", "1"), ("id", "2")], "5") is None


# --------------------------------------------------------------------------
# MQTT 5 binary mode (§4.3)


def test_5_binary_user_properties_have_no_prefix() -> None:
    ev = decode_mqtt(b"21.5", "text/plain", [*PROPS, ("subject", "room 1")], "5")
    assert ev == Event({**BASE, "subject": "room 1", "datacontenttype": "text/plain"}, b"21.5")


def test_5_binary_ce_prefixed_properties_are_not_attributes() -> None:
    props = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s"), ("ce-type", "t")]
    assert decode_mqtt(b"x", "text/plain", props, "5") is None


def test_5_binary_values_are_not_percent_decoded() -> None:
    ev = decode_mqtt(b"", None, [*PROPS, ("subject", "Euro%20€ 😀"), ("q", '"quoted"')], "5")
    assert ev is not None
    assert ev.attrs["subject"] == "Euro%20€ 😀"
    assert ev.attrs["q"] == '"quoted"'


def test_5_binary_content_type_property_is_datacontenttype() -> None:
    ev = decode_mqtt(b"{}", "application/json", PROPS, "5")
    assert ev is not None
    assert ev.attrs["datacontenttype"] == "application/json"
    assert ev.data == b"{}"


def test_5_binary_duplicate_datacontenttype_property_is_ignored() -> None:
    props = [*PROPS, ("datacontenttype", "text/other"), ("datacontenttype", "x/y")]
    ev = decode_mqtt(b"{}", "application/json", props, "5")
    assert ev is not None
    assert ev.attrs["datacontenttype"] == "application/json"


def test_5_binary_datacontenttype_property_is_used_without_content_type() -> None:
    ev = decode_mqtt(b"{}", None, [*PROPS, ("datacontenttype", "application/json")], "5")
    assert ev is not None
    assert ev.attrs["datacontenttype"] == "application/json"


def test_5_binary_without_content_type_has_none() -> None:
    ev = decode_mqtt(b"\x00", None, PROPS, "5")
    assert ev is not None
    assert ev.content_type is None
    assert ev.data == b"\x00"


def test_5_binary_empty_payload_is_no_data() -> None:
    ev = decode_mqtt(b"", None, PROPS, "5")
    assert ev is not None and ev.data is None


def test_5_binary_extension_values_are_strings() -> None:
    ev = decode_mqtt(b"", None, [*PROPS, ("n", "5"), ("f", "true")], "5")
    assert ev is not None
    assert ev.attrs["n"] == "5" and ev.attrs["f"] == "true"


def test_5_binary_attribute_given_twice_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="more than once") as info:
        decode_mqtt(b"", None, [*PROPS, ("id", "again")], "5")
    assert info.value.attribute == "id"


@pytest.mark.parametrize("prop", [("Bad", "x"), ("x-trace", "y"), ("data", "z"), ("id", "")])
def test_5_binary_invalid_attribute_is_invalid(prop: tuple[str, str]) -> None:
    props = [p for p in PROPS if p[0] != prop[0]] + [prop]
    with pytest.raises(InvalidEvent):
        decode_mqtt(b"", None, props, "5")


def test_5_binary_missing_required_attribute() -> None:
    props = [p for p in PROPS if p[0] != "type"]
    with pytest.raises(InvalidEvent, match="missing required attribute 'type'"):
        decode_mqtt(b"", None, props, "5")


def test_5_binary_unpaired_surrogate_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        decode_mqtt(b"", None, [*PROPS, ("subject", "a\udc80")], "5")


def test_5_encode_binary() -> None:
    ev = event(b"<x/>", datacontenttype="application/xml", subject="Euro € 😀", n=3, f=True)
    payload, content_type, props = encode_mqtt(ev, Mode.BINARY, "5")
    assert payload == b"<x/>"
    assert content_type == "application/xml"
    assert props == [*PROPS, ("subject", "Euro € 😀"), ("n", "3"), ("f", "true")]
    assert all(name != "datacontenttype" for name, _ in props)
    again = decode_mqtt(payload, content_type, props, "5")
    assert again == Event({**ev.attrs, "n": "3", "f": "true"}, b"<x/>")


def test_5_encode_binary_implied_json_sets_the_content_type() -> None:
    payload, content_type, props = encode_mqtt(event(b'"s"', json_implied=True), Mode.BINARY, "5")
    assert (payload, content_type) == (b'"s"', "application/json")
    assert props == PROPS


def test_5_encode_binary_without_data() -> None:
    payload, content_type, props = encode_mqtt(event(), Mode.BINARY, "5")
    assert (payload, content_type) == (b"", None)
    again = decode_mqtt(payload, content_type, props, "5")
    assert again == event()


def test_5_encode_structured() -> None:
    ev = event(b"\x00", n=1)
    payload, content_type, props = encode_mqtt(ev, Mode.STRUCTURED, "5")
    assert content_type == STRUCTURED_CONTENT_TYPE
    assert props == []
    assert decode_mqtt(payload, content_type, props, "5") == ev


def test_5_binary_encode_of_a_cloudevents_json_payload_falls_back_to_structured() -> None:
    ev = event(b'{"specversion":"1.0"}', datacontenttype="application/cloudevents+json")
    payload, content_type, props = encode_mqtt(ev, Mode.BINARY, "5")
    assert content_type == STRUCTURED_CONTENT_TYPE and props == []
    assert decode_mqtt(payload, content_type, props, "5") == ev


@pytest.mark.parametrize("mode", [Mode.BATCH, Mode.RAW])
def test_encode_mqtt_rejects_other_modes(mode: Mode) -> None:
    with pytest.raises(ValueError):
        encode_mqtt(event(), mode, "5")
    with pytest.raises(ValueError):
        encode_mqtt(event(), mode, "3.1.1")
