"""The JSON event format codec: every rule of reference §2 as a focused test."""

from __future__ import annotations

import base64

import orjson
import pytest

from mesh.core.codec import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    decode_batch,
    decode_structured,
    encode_batch,
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


def event(data: bytes | None = None, *, json_implied: bool = False, **attrs: AttrValue) -> Event:
    return Event({**BASE, **attrs}, data, json_implied=json_implied)


def body(**members: object) -> bytes:
    return orjson.dumps({**BASE, **members})


def members(ev: Event) -> dict[str, object]:
    obj = orjson.loads(encode_structured(ev))
    assert isinstance(obj, dict)
    return obj


def test_media_types() -> None:
    assert STRUCTURED_CONTENT_TYPE.startswith("application/cloudevents+json")
    assert BATCH_CONTENT_TYPE.startswith("application/cloudevents-batch+json")


# --------------------------------------------------------------------------
# Writing data (§2.1)


def test_no_data_writes_no_data_member() -> None:
    obj = members(event(datacontenttype="application/json"))
    assert "data" not in obj
    assert "data_base64" not in obj
    assert obj["datacontenttype"] == "application/json"


def test_json_data_is_embedded_as_a_json_value_byte_for_byte() -> None:
    data = b'{ "temp" : 21.5,\n "unit": "C" }'
    out = encode_structured(event(data, datacontenttype="application/json"))
    assert data in out  # orjson.Fragment: embedded unchanged, not re-serialised
    assert orjson.loads(out)["data"] == {"temp": 21.5, "unit": "C"}


@pytest.mark.parametrize(
    "ct",
    [
        "application/json",
        "APPLICATION/JSON; Charset=UTF-8",
        "text/json",
        "application/vnd.example.reading+json",
        "application/cloudevents+json",
    ],
)
def test_json_like_content_types_write_data_as_json(ct: str) -> None:
    obj = members(event(b"[1,2]", datacontenttype=ct))
    assert obj["data"] == [1, 2]
    assert obj["datacontenttype"] == ct


def test_json_string_data_is_a_json_string_not_a_string_of_json() -> None:
    obj = members(event(b'"abc"', datacontenttype="application/json"))
    assert obj["data"] == "abc"


def test_implied_json_writes_data_and_no_datacontenttype() -> None:
    obj = members(event(b'{"a":1}', json_implied=True))
    assert obj["data"] == {"a": 1}
    assert "datacontenttype" not in obj


def test_json_content_type_with_invalid_json_bytes_uses_data_base64() -> None:
    data = b"not json {"
    obj = members(event(data, datacontenttype="application/json"))
    assert "data" not in obj
    assert base64.b64decode(str(obj["data_base64"])) == data
    assert obj["datacontenttype"] == "application/json"  # describes the original bytes


def test_text_content_type_writes_a_string() -> None:
    obj = members(event("<a>€</a>".encode(), datacontenttype="application/xml"))
    assert obj["data"] == "<a>€</a>"
    assert "data_base64" not in obj


def test_text_content_type_with_non_utf8_bytes_uses_data_base64() -> None:
    obj = members(event(b"\xff\xfe", datacontenttype="text/plain"))
    assert obj["data_base64"] == base64.b64encode(b"\xff\xfe").decode()


def test_bytes_without_content_type_use_data_base64_and_add_no_content_type() -> None:
    obj = members(event(b"\x00\x01binary"))
    assert obj["data_base64"] == base64.b64encode(b"\x00\x01binary").decode()
    assert "datacontenttype" not in obj
    assert "data" not in obj


def test_extensions_are_top_level_members_with_native_json_types() -> None:
    out = encode_structured(
        event(count=42, flag=True, off=False, name="x", uri="https://a.example/b")
    )
    obj = orjson.loads(out)
    assert obj["count"] == 42 and type(obj["count"]) is int
    assert obj["flag"] is True and obj["off"] is False
    assert obj["name"] == "x"
    assert obj["uri"] == "https://a.example/b"
    assert b'"count":42' in out and b'"flag":true' in out


def test_unencodable_string_raises_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        encode_structured(event(subject="bad \ud800"))


# --------------------------------------------------------------------------
# Reading data (§2.2)


def test_data_base64_is_decoded_and_json_is_not_assumed() -> None:
    ev = decode_structured(body(data_base64=base64.b64encode(b"\x00raw").decode()))
    assert ev.data == b"\x00raw"
    assert ev.content_type is None
    assert not ev.json_implied


def test_json_data_without_content_type_is_implied_json() -> None:
    ev = decode_structured(body(data={"a": [1, 2]}))
    assert ev.data == b'{"a":[1,2]}'
    assert ev.json_implied
    assert ev.content_type == "application/json"
    assert "datacontenttype" not in ev.attrs


def test_json_string_data_keeps_its_quotes() -> None:
    ev = decode_structured(body(data="I'm just a string"))
    assert ev.data == b'"I\'m just a string"'
    ev = decode_structured(body(data="abc", datacontenttype="application/json"))
    assert ev.data == b'"abc"'
    assert not ev.json_implied


def test_json_like_content_type_is_case_insensitive_on_decode() -> None:
    ev = decode_structured(body(data={"a": 1}, datacontenttype="Application/JSON; charset=utf-8"))
    assert ev.data == b'{"a":1}'


def test_explicit_data_null_is_kept_distinct_from_absent_data() -> None:
    ev = decode_structured(body(data=None))
    assert ev.data == b"null"
    assert decode_structured(body()).data is None
    again = decode_structured(encode_structured(ev))
    assert again.data == b"null"
    assert "data" in orjson.loads(encode_structured(ev))


def test_non_json_content_type_takes_the_string_as_utf8_bytes() -> None:
    ev = decode_structured(body(data="<a>€</a>", datacontenttype="text/xml"))
    assert ev.data == "<a>€</a>".encode()


@pytest.mark.parametrize("value", [{"a": 1}, [1], 5, True])
def test_non_json_content_type_with_non_string_data_is_rejected(value: object) -> None:
    with pytest.raises(InvalidEvent, match="data must be a string"):
        decode_structured(body(data=value, datacontenttype="text/plain"))


def test_data_and_data_base64_are_mutually_exclusive() -> None:
    with pytest.raises(InvalidEvent, match="mutually exclusive"):
        decode_structured(body(data="x", data_base64="eA=="))
    with pytest.raises(InvalidEvent, match="mutually exclusive"):
        decode_structured(body(data=None, data_base64="eA=="))


@pytest.mark.parametrize("value", ["not base64!", "QQ=", "QQ==QQ==", "é", 5])
def test_invalid_data_base64_is_rejected(value: object) -> None:
    with pytest.raises(InvalidEvent, match="data_base64"):
        decode_structured(body(data_base64=value))


def test_data_base64_null_counts_as_absent() -> None:
    assert decode_structured(body(data_base64=None)).data is None


# --------------------------------------------------------------------------
# Attributes


def test_null_attributes_are_absent() -> None:
    ev = decode_structured(body(subject=None, dataschema=None, ext=None, time=None))
    assert ev.attrs == BASE


def test_null_datacontenttype_is_absent_so_data_is_implied_json() -> None:
    ev = decode_structured(body(datacontenttype=None, data={"a": 1}))
    assert ev.json_implied
    assert "datacontenttype" not in ev.attrs


def test_extension_types_survive_a_structured_round_trip() -> None:
    ev = event(b"{}", datacontenttype="application/json", n=-5, b=True, s="x", u="urn:uuid:1")
    again = decode_structured(encode_structured(ev))
    assert again == ev
    assert again.attrs["n"] == -5 and type(again.attrs["n"]) is int
    assert again.attrs["b"] is True


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "not an integer"),
        (2.0, "not an integer"),
        ({"a": 1}, "not an object"),
        ([1], "not an array"),
        (2**31, "32-bit"),
        (-(2**31) - 1, "32-bit"),
    ],
)
def test_bad_attribute_values_are_rejected(value: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason) as info:
        decode_structured(body(ext=value))
    assert info.value.attribute == "ext"


def test_int32_bounds_are_accepted() -> None:
    ev = decode_structured(body(lo=-(2**31), hi=2**31 - 1))
    assert ev.attrs["lo"] == -(2**31)
    assert ev.attrs["hi"] == 2**31 - 1


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_missing_required_attribute(missing: str) -> None:
    obj = dict(BASE)
    del obj[missing]
    with pytest.raises(InvalidEvent, match=f"missing required attribute '{missing}'"):
        decode_structured(orjson.dumps(obj))


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("specversion", "0.3"),
        ("id", ""),
        ("source", ""),
        ("subject", ""),
        ("id", 5),
        ("time", True),
        ("Bad", "x"),
        ("with_underscore", "x"),
        ("ext", "line\nbreak"),
        ("ext", "c1\x85control"),
        ("ext", "del\x7fchar"),  # DEL is written raw, without a backslash
        ("ext", "nul\x00char"),
    ],
)
def test_rule_violations_are_rejected(member: str, value: object) -> None:
    with pytest.raises(InvalidEvent):
        decode_structured(body(**{member: value}))


def test_backslash_escapes_are_checked_wherever_they_are() -> None:
    # Without any backslash in the text no string can hold a C0 control
    # character, and the validator skips that scan; with one anywhere (here
    # in data), attribute values are scanned and a clean event still passes.
    ev = decode_structured(body(subject="a/b", data={"path": "C:\\x"}))
    assert ev.attrs["subject"] == "a/b"
    assert ev.data == b'{"path":"C:\\\\x"}'
    raw = b'{"specversion":"1.0","id":"1","source":"s","type":"t","ext":"a\\u0001b"}'
    with pytest.raises(InvalidEvent, match="control character"):
        decode_structured(raw)
    batch = b"[" + body(id="ok") + b"," + raw + b"]"
    ok, bad = decode_batch(batch)
    assert isinstance(ok, Event)
    assert isinstance(bad, InvalidEvent)
    assert "control character" in bad.reason


def test_long_names_and_names_starting_with_a_digit_are_legal() -> None:
    ev = decode_structured(body(**{"a" * 30: "x", "1abc": "y"}))
    assert ev.attrs["a" * 30] == "x"
    assert ev.attrs["1abc"] == "y"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'"x"', b"null", b"{", b"\xff"])
def test_non_object_or_invalid_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="structured event"):
        decode_structured(raw)


def test_json_data_is_kept_as_sent_on_decode() -> None:
    # More in test_codec_data_fidelity.py.
    ev = decode_structured(
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","data": { "a" : 1 }}'
    )
    assert ev.data == b'{ "a" : 1 }'


# --------------------------------------------------------------------------
# Batches


def test_batch_round_trip() -> None:
    events = [
        event(b'{"a":1}', datacontenttype="application/json"),
        event(b"\x00", id="e-2"),
        event(None, id="e-3", n=7),
    ]
    assert decode_batch(encode_batch(events)) == events


def test_empty_batch() -> None:
    assert encode_batch([]) == b"[]"
    assert decode_batch(b"[]") == []


def test_batch_with_one_bad_element_keeps_the_others() -> None:
    good = {**BASE, "data": {"x": 1}}
    bad = {k: v for k, v in BASE.items() if k != "source"}
    out = decode_batch(orjson.dumps([good, bad, 5, {**good, "id": "e-9"}]))
    assert len(out) == 4
    assert isinstance(out[0], Event) and out[0].data == b'{"x":1}'
    assert isinstance(out[1], InvalidEvent)
    assert "batch element 1" in out[1].reason
    assert "missing required attribute 'source'" in out[1].reason
    assert out[1].attribute == "source"
    assert isinstance(out[2], InvalidEvent) and "batch element 2" in out[2].reason
    assert isinstance(out[3], Event) and out[3].id == "e-9"


@pytest.mark.parametrize("raw", [b"{}", b"not json", b'"x"', b""])
def test_batch_body_that_is_not_an_array_raises(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="batch"):
        decode_batch(raw)
