"""The HTTP binding and header value encoding: reference §3 as focused tests."""

from __future__ import annotations

import orjson
import pytest

from mesh.core.codec import (
    STRUCTURED_CONTENT_TYPE,
    Mode,
    canonical_string,
    decode_http,
    decode_structured,
    encode_http,
    encode_structured,
    percent_decode,
    percent_encode,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, Event

BASE: dict[str, AttrValue] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/sensors/tn-1",
    "type": "com.example.reading",
}
CE_HEADERS = {f"ce-{k}": str(v) for k, v in BASE.items()}


def event(data: bytes | None = None, *, json_implied: bool = False, **attrs: AttrValue) -> Event:
    return Event({**BASE, **attrs}, data, json_implied=json_implied)


def binary(headers: dict[str, str], body: bytes = b"") -> Event:
    mode, events = decode_http(headers, body)
    assert mode is Mode.BINARY
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, Event)
    return ev


# --------------------------------------------------------------------------
# Percent-encoding (§3.2)


def test_percent_encoding_spec_example() -> None:
    assert percent_encode("Euro € 😀") == "Euro%20%E2%82%AC%20%F0%9F%98%80"
    assert percent_decode("Euro%20%E2%82%AC%20%F0%9F%98%80") == "Euro € 😀"


def test_space_double_quote_and_percent_are_encoded() -> None:
    assert percent_encode('a b"c%d') == "a%20b%22c%25d"


def test_printable_ascii_other_than_those_is_left_as_is() -> None:
    safe = ":/?#[]@!$&'()*+,;=-._~<>\\^`{|}"
    assert percent_encode(safe) == safe
    assert percent_encode("") == ""


def test_control_characters_are_encoded() -> None:
    assert percent_encode("a\tb\x7f") == "a%09b%7F"


def test_uppercase_hex_is_produced_and_lowercase_hex_is_accepted() -> None:
    assert percent_encode("é") == "%C3%A9"
    assert percent_decode("%c3%a9") == "é"
    assert percent_decode("%C3%a9") == "é"


def test_needlessly_encoded_characters_are_accepted() -> None:
    assert percent_decode("%41%42C") == "ABC"


def test_exactly_one_round_of_percent_decoding() -> None:
    assert percent_decode("100%2541") == "100%41"


def test_plus_is_not_a_space() -> None:
    assert percent_decode("a+b") == "a+b"


def test_overlong_utf8_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="not valid UTF-8"):
        percent_decode("%C0%A0")


@pytest.mark.parametrize("value", ["%FF", "%E2%82", "%ED%A0%80", "a%80b"])
def test_invalid_utf8_is_rejected(value: str) -> None:
    with pytest.raises(InvalidEvent, match="invalid percent-encoding"):
        percent_decode(value)


@pytest.mark.parametrize("value", ["%", "abc%", "%4", "%zz", "%4g", "a%%20"])
def test_malformed_percent_escapes_are_rejected(value: str) -> None:
    with pytest.raises(InvalidEvent, match="malformed escape"):
        percent_decode(value)


def test_quoted_strings_are_unwrapped_before_percent_decoding() -> None:
    assert percent_decode('"Euro%20%E2%82%AC"') == "Euro €"
    assert percent_decode('"a b"') == "a b"
    assert percent_decode('"a\\"b\\\\c"') == 'a"b\\c'
    assert percent_decode('""') == ""


@pytest.mark.parametrize("value", ['"abc\\"', '"a"b"'])
def test_malformed_quoted_strings_are_rejected(value: str) -> None:
    with pytest.raises(InvalidEvent, match="quoted-string"):
        percent_decode(value)


def test_a_lone_double_quote_is_not_a_quoted_string() -> None:
    assert percent_decode('"') == '"'
    assert percent_decode('a"b') == 'a"b'


def test_unpaired_surrogates_cannot_be_encoded_or_decoded() -> None:
    with pytest.raises(InvalidEvent):
        percent_encode("a\ud800")
    with pytest.raises(InvalidEvent):
        percent_decode("a\ud800")
    with pytest.raises(InvalidEvent):
        percent_decode("%41\udfff")


def test_canonical_strings() -> None:
    assert canonical_string(True) == "true"
    assert canonical_string(False) == "false"
    assert canonical_string(-42) == "-42"
    assert canonical_string(0) == "0"
    assert canonical_string("x y") == "x y"


# --------------------------------------------------------------------------
# Mode detection (§3.1)


def test_batch_is_detected_before_structured() -> None:
    raw = orjson.dumps([BASE])
    mode, events = decode_http({"content-type": "application/cloudevents-batch+json"}, raw)
    assert mode is Mode.BATCH
    assert events == [Event(dict(BASE))]


@pytest.mark.parametrize(
    "ct",
    [
        "application/cloudevents+json",
        STRUCTURED_CONTENT_TYPE,
        "Application/CloudEvents+JSON; charset=UTF-8",
        "application/cloudevents",
    ],
)
def test_structured_mode_from_content_type(ct: str) -> None:
    mode, events = decode_http({"content-type": ct}, orjson.dumps(BASE))
    assert mode is Mode.STRUCTURED
    assert events == [Event(dict(BASE))]


def test_structured_message_with_ce_headers_is_decoded_from_the_body() -> None:
    headers = {
        "content-type": "application/cloudevents+json",
        "ce-specversion": "1.0",
        "ce-id": "header-id",
        "ce-source": "/header",
        "ce-type": "header.type",
        "ce-extra": "only-in-headers",
    }
    raw = orjson.dumps({**BASE, "data": {"a": 1}})
    mode, events = decode_http(headers, raw)
    assert mode is Mode.STRUCTURED
    ev = events[0]
    assert isinstance(ev, Event)
    assert ev.attrs == BASE  # the body is authoritative
    assert ev.data == b'{"a":1}'


def test_invalid_structured_message_raises() -> None:
    with pytest.raises(InvalidEvent):
        decode_http({"content-type": "application/cloudevents+json"}, b"{}")


def test_message_without_ce_specversion_is_raw() -> None:
    assert decode_http({"content-type": "application/json"}, b'{"a":1}') == (Mode.RAW, [])
    assert decode_http({}, b"") == (Mode.RAW, [])
    headers = {k: v for k, v in CE_HEADERS.items() if k != "ce-specversion"}
    assert decode_http(headers, b"x") == (Mode.RAW, [])


def test_unknown_cloudevents_format_is_treated_as_binary() -> None:
    headers = {**CE_HEADERS, "content-type": "application/cloudevents+avro"}
    ev = binary(headers, b"\x02avro")
    assert ev.attrs["datacontenttype"] == "application/cloudevents+avro"
    assert ev.data == b"\x02avro"
    # Without ce-specversion it is simply not a CloudEvent.
    assert decode_http({"content-type": "application/cloudevents+avro"}, b"x") == (Mode.RAW, [])
    # Re-encoding forwards it unchanged.
    assert encode_http(ev, Mode.BINARY) == ({**headers}, b"\x02avro")


# --------------------------------------------------------------------------
# Binary mode (§3.2)


def test_binary_content_type_is_datacontenttype_and_body_is_data() -> None:
    ev = binary({**CE_HEADERS, "content-type": "text/plain; charset=utf-8"}, b"hello")
    assert ev.attrs == {**BASE, "datacontenttype": "text/plain; charset=utf-8"}
    assert ev.data == b"hello"


def test_binary_without_content_type_has_no_datacontenttype() -> None:
    ev = binary(dict(CE_HEADERS), b"\x00\x01")
    assert "datacontenttype" not in ev.attrs
    assert ev.content_type is None


def test_binary_empty_body_is_no_data() -> None:
    assert binary(dict(CE_HEADERS), b"").data is None


def test_ce_datacontenttype_header_is_an_error_in_http() -> None:
    with pytest.raises(InvalidEvent, match="ce-datacontenttype") as info:
        decode_http({**CE_HEADERS, "ce-datacontenttype": "text/plain"}, b"x")
    assert info.value.attribute == "datacontenttype"


def test_binary_header_values_are_percent_decoded() -> None:
    headers = {**CE_HEADERS, "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80"}
    assert binary(headers).attrs["subject"] == "Euro € 😀"


def test_binary_quoted_string_header_is_unwrapped() -> None:
    headers = {**CE_HEADERS, "ce-subject": '"room%2012"', "ce-ext": '"a\\"b"'}
    ev = binary(headers)
    assert ev.attrs["subject"] == "room 12"
    assert ev.attrs["ext"] == 'a"b'


def test_binary_invalid_percent_encoding_names_the_header() -> None:
    with pytest.raises(InvalidEvent, match=r"header ce-id: invalid percent-encoding") as info:
        decode_http({**CE_HEADERS, "ce-id": "%C0%A0"}, b"")
    assert info.value.attribute == "id"


def test_binary_extension_values_stay_strings() -> None:
    ev = binary({**CE_HEADERS, "ce-count": "5", "ce-flag": "true"})
    assert ev.attrs["count"] == "5"
    assert ev.attrs["flag"] == "true"


def test_binary_missing_required_attribute() -> None:
    headers = {k: v for k, v in CE_HEADERS.items() if k != "ce-source"}
    with pytest.raises(InvalidEvent, match="missing required attribute 'source'"):
        decode_http(headers, b"")


@pytest.mark.parametrize(
    ("name", "value"),
    [("ce-id", ""), ("ce-specversion", "0.3"), ("ce-bad_name", "x"), ("ce-data", "x")],
)
def test_binary_rule_violations(name: str, value: str) -> None:
    with pytest.raises(InvalidEvent):
        decode_http({**CE_HEADERS, name: value}, b"")


def test_binary_encoded_control_character_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="control character"):
        decode_http({**CE_HEADERS, "ce-subject": "a%0Ab"}, b"")


@pytest.mark.parametrize("value", ["a\x01b", "a\tb", "a\x7fb"])
def test_binary_raw_control_character_is_rejected(value: str) -> None:
    # Not percent-encoded: the value takes the fast path and is still checked.
    with pytest.raises(InvalidEvent, match="control character"):
        decode_http({**CE_HEADERS, "ce-subject": value}, b"")
    with pytest.raises(InvalidEvent, match="control character"):
        decode_http({**CE_HEADERS, "content-type": "text/plain", "ce-subject": value}, b"")


def test_encode_binary_headers() -> None:
    ev = event(b"<x/>", datacontenttype="application/xml", subject="Euro € 😀", n=42, f=True)
    headers, body = encode_http(ev, Mode.BINARY)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/sensors/tn-1",
        "ce-type": "com.example.reading",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "ce-n": "42",
        "ce-f": "true",
        "content-type": "application/xml",
    }
    assert body == b"<x/>"


def test_encode_binary_implied_json_sets_content_type() -> None:
    headers, body = encode_http(event(b"[1]", json_implied=True), Mode.BINARY)
    assert headers["content-type"] == "application/json"
    assert "ce-datacontenttype" not in headers
    assert body == b"[1]"


def test_json_string_data_keeps_its_quotes_in_binary_mode() -> None:
    # §2.3: a JSON-format string datum without datacontenttype.
    ev = decode_structured(orjson.dumps({**BASE, "data": "I'm just a string"}))
    headers, body = encode_http(ev, Mode.BINARY)
    assert headers["content-type"] == "application/json"
    assert body == b'"I\'m just a string"'


def test_data_base64_without_content_type_gives_no_content_type_header() -> None:
    ev = decode_structured(orjson.dumps({**BASE, "data_base64": "AAEC"}))
    headers, body = encode_http(ev, Mode.BINARY)
    assert "content-type" not in headers
    assert body == b"\x00\x01\x02"


def test_encode_binary_without_data_has_an_empty_body() -> None:
    headers, body = encode_http(event(), Mode.BINARY)
    assert body == b""
    assert "content-type" not in headers


def test_binary_round_trip_stringifies_extensions() -> None:
    ev = event(
        b'{"a":1}', datacontenttype="application/json", n=7, f=False, u="https://x.example/a b"
    )
    headers, body = encode_http(ev, Mode.BINARY)
    again = binary(headers, body)
    assert again.attrs == {**ev.attrs, "n": "7", "f": "false"}
    assert again.data == ev.data


def test_binary_round_trip_of_implied_json_makes_the_type_explicit() -> None:
    ev = event(b"1", json_implied=True)
    again = binary(*encode_http(ev, Mode.BINARY))
    assert again.attrs["datacontenttype"] == "application/json"
    assert again.content_type == ev.content_type


@pytest.mark.parametrize(
    "ct", ["application/cloudevents+json", "application/cloudevents-batch+json; charset=utf-8"]
)
def test_binary_encode_of_a_cloudevents_json_payload_falls_back_to_structured(ct: str) -> None:
    inner = encode_structured(event(b"{}", json_implied=True, id="inner"))
    ev = event(inner, datacontenttype=ct, id="outer")
    headers, body = encode_http(ev, Mode.BINARY)
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    mode, events = decode_http(headers, body)
    assert mode is Mode.STRUCTURED
    assert events == [ev]


# --------------------------------------------------------------------------
# Structured and batch mode (§3.3, §3.4)


def test_encode_structured() -> None:
    ev = event(b'{"a":1}', datacontenttype="application/json", n=1)
    headers, body = encode_http(ev, Mode.STRUCTURED)
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    assert body == encode_structured(ev)
    mode, events = decode_http(headers, body)
    assert (mode, events) == (Mode.STRUCTURED, [ev])


def test_batch_through_http_keeps_good_elements() -> None:
    raw = orjson.dumps([BASE, {"id": "x"}, {**BASE, "id": "e-2"}])
    mode, events = decode_http({"content-type": "application/cloudevents-batch+json"}, raw)
    assert mode is Mode.BATCH
    assert [type(e) for e in events] == [Event, InvalidEvent, Event]


def test_batch_body_that_is_not_an_array_raises() -> None:
    with pytest.raises(InvalidEvent):
        decode_http({"content-type": "application/cloudevents-batch+json"}, b"{}")


@pytest.mark.parametrize("mode", [Mode.BATCH, Mode.RAW])
def test_encode_http_rejects_other_modes(mode: Mode) -> None:
    with pytest.raises(ValueError):
        encode_http(event(), mode)


# --------------------------------------------------------------------------
# Header names are case-insensitive (§3.2)


def test_mixed_case_header_names_are_accepted() -> None:
    headers = {"CE-SpecVersion": "1.0", "Ce-Id": "e-1", "ce-SOURCE": "/s", "ce-type": "t"}
    headers["Content-Type"] = "text/plain"
    ev = binary(headers, b"x")
    assert ev.attrs == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/s",
        "type": "t",
        "datacontenttype": "text/plain",
    }


def test_mixed_case_structured_content_type_header() -> None:
    mode, _ = decode_http({"Content-Type": "application/cloudevents+json"}, orjson.dumps(BASE))
    assert mode is Mode.STRUCTURED


def test_header_names_differing_only_in_case_are_a_duplicate() -> None:
    with pytest.raises(InvalidEvent, match="more than once"):
        decode_http({**CE_HEADERS, "CE-ID": "other"}, b"")


def test_mixed_case_ce_datacontenttype_is_still_an_error() -> None:
    with pytest.raises(InvalidEvent, match="ce-datacontenttype"):
        decode_http({**CE_HEADERS, "CE-DataContentType": "text/plain"}, b"")


def test_many_header_layouts() -> None:
    # The per-layout plan cache is bounded; results never depend on it.
    for i in range(700):
        headers = {**CE_HEADERS, f"x-h{i}": "v", "ce-n": str(i)}
        assert binary(headers).attrs["n"] == str(i)
