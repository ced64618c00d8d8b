"""The NATS binding: reference §5 as focused tests."""

from __future__ import annotations

import orjson
import pytest

from mesh.core.codec import (
    STRUCTURED_CONTENT_TYPE,
    Mode,
    decode_nats,
    decode_structured,
    encode_http,
    encode_nats,
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
CE_HEADERS = {f"ce-{k}": str(v) for k, v in BASE.items()}
STRUCTURED = orjson.dumps({**BASE, "data": {"t": 1}})


def event(data: bytes | None = None, *, json_implied: bool = False, **attrs: AttrValue) -> Event:
    return Event({**BASE, **attrs}, data, json_implied=json_implied)


# --------------------------------------------------------------------------
# Mode detection (§5.1)


@pytest.mark.parametrize("name", ["Content-Type", "content-type", "CONTENT-TYPE"])
def test_structured_from_content_type_header(name: str) -> None:
    ev = decode_nats(STRUCTURED, {name: "application/cloudevents+json; charset=utf-8"})
    assert ev is not None and ev.attrs == BASE


def test_structured_with_ce_headers_uses_the_payload() -> None:
    headers = {**CE_HEADERS, "ce-id": "header-id", "Content-Type": "application/cloudevents+json"}
    ev = decode_nats(STRUCTURED, headers)
    assert ev is not None and ev.id == "e-1"


def test_invalid_structured_raises() -> None:
    with pytest.raises(InvalidEvent):
        decode_nats(b"nope", {"Content-Type": "application/cloudevents+json"})


@pytest.mark.parametrize("headers", [None, {}])
def test_v102_publisher_without_headers_is_structured(headers: dict[str, str] | None) -> None:
    ev = decode_nats(STRUCTURED, headers)
    assert ev == Event(dict(BASE), b'{"t":1}', json_implied=True)


def test_structured_without_ce_specversion_or_content_type_is_tolerated() -> None:
    ev = decode_nats(STRUCTURED, {"Nats-Msg-Id": "abc", "traceparent": "00-1-2-01"})
    assert ev is not None and ev.attrs == BASE


def test_json_content_type_without_ce_specversion_is_raw() -> None:
    assert decode_nats(STRUCTURED, {"Content-Type": "application/json"}) is None


@pytest.mark.parametrize("payload", [b"", b"21.5", b'{"a": 1}', b'{"specversion": oops'])
def test_raw_payloads(payload: bytes) -> None:
    assert decode_nats(payload, None) is None
    assert decode_nats(payload, {"x": "y"}) is None


def test_invalid_headerless_cloudevent_raises() -> None:
    with pytest.raises(InvalidEvent, match="missing required attribute 'source'"):
        decode_nats(b'{"specversion":"1.0","id":"1","type":"t"}', None)


def test_unknown_cloudevents_format_is_binary() -> None:
    headers = {**CE_HEADERS, "ce-datacontenttype": "application/cloudevents+avro"}
    headers["Content-Type"] = "application/cloudevents+avro"
    ev = decode_nats(b"\x02", headers)
    assert ev is not None
    assert ev.attrs["datacontenttype"] == "application/cloudevents+avro"
    assert ev.data == b"\x02"


# --------------------------------------------------------------------------
# Binary mode (§5.2)


def test_binary_datacontenttype_comes_from_ce_datacontenttype() -> None:
    headers = {**CE_HEADERS, "ce-datacontenttype": "text/plain;%20charset=utf-8"}
    ev = decode_nats(b"hi", headers)
    assert ev == Event({**BASE, "datacontenttype": "text/plain; charset=utf-8"}, b"hi")


def test_binary_content_type_header_is_not_the_data_type() -> None:
    ev = decode_nats(b"hi", {**CE_HEADERS, "Content-Type": "text/plain"})
    assert ev is not None
    assert "datacontenttype" not in ev.attrs


def test_binary_header_names_are_case_insensitive() -> None:
    headers = {"CE-SPECVERSION": "1.0", "Ce-Id": "e-1", "ce-Source": "/s", "cE-type": "t"}
    ev = decode_nats(b"", headers)
    assert ev == Event({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t"})


def test_binary_headers_differing_only_in_case_are_a_duplicate() -> None:
    with pytest.raises(InvalidEvent, match="more than once"):
        decode_nats(b"", {**CE_HEADERS, "CE-ID": "other"})


def test_binary_values_are_percent_decoded_like_http() -> None:
    headers = {**CE_HEADERS, "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80", "ce-q": '"a%20b"'}
    ev = decode_nats(b"", headers)
    assert ev is not None
    assert ev.attrs["subject"] == "Euro € 😀"
    assert ev.attrs["q"] == "a b"


def test_binary_invalid_utf8_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match=r"header ce-subject: invalid percent-encoding"):
        decode_nats(b"", {**CE_HEADERS, "ce-subject": "%C0%A0"})


def test_binary_extension_values_stay_strings() -> None:
    ev = decode_nats(b"", {**CE_HEADERS, "ce-n": "1", "ce-f": "false"})
    assert ev is not None
    assert ev.attrs["n"] == "1" and ev.attrs["f"] == "false"


def test_binary_missing_required_attribute() -> None:
    headers = {k: v for k, v in CE_HEADERS.items() if k != "ce-id"}
    with pytest.raises(InvalidEvent, match="missing required attribute 'id'"):
        decode_nats(b"", headers)


def test_binary_empty_payload_is_no_data() -> None:
    ev = decode_nats(b"", dict(CE_HEADERS))
    assert ev is not None and ev.data is None


def test_encode_binary() -> None:
    ev = event(b"a b", datacontenttype="text/plain; charset=utf-8", subject="€", n=2, f=False)
    payload, headers = encode_nats(ev, Mode.BINARY)
    assert payload == b"a b"
    assert headers == {
        **CE_HEADERS,
        "ce-datacontenttype": "text/plain;%20charset=utf-8",
        "ce-subject": "%E2%82%AC",
        "ce-n": "2",
        "ce-f": "false",
    }
    assert decode_nats(payload, headers) == Event({**ev.attrs, "n": "2", "f": "false"}, b"a b")


def test_encode_binary_implied_json_is_explicit() -> None:
    payload, headers = encode_nats(event(b"[]", json_implied=True), Mode.BINARY)
    assert headers["ce-datacontenttype"] == "application/json"
    assert payload == b"[]"
    ev = decode_nats(payload, headers)
    assert ev is not None and ev.attrs["datacontenttype"] == "application/json"


def test_encode_binary_without_content_type_or_data() -> None:
    payload, headers = encode_nats(event(), Mode.BINARY)
    assert payload == b""
    assert headers == CE_HEADERS


def test_nats_carries_datacontenttype_where_http_does_not() -> None:
    ev = event(b"{}", datacontenttype="application/json")
    _, nats_headers = encode_nats(ev, Mode.BINARY)
    http_headers, _ = encode_http(ev, Mode.BINARY)
    assert nats_headers["ce-datacontenttype"] == "application/json"
    assert all(k.lower() != "content-type" for k in nats_headers)
    assert http_headers["content-type"] == "application/json"
    assert "ce-datacontenttype" not in http_headers
    # An HTTP-style binary message read as NATS has no data content type.
    ev_from_http_style = decode_nats(b"{}", http_headers)
    assert ev_from_http_style is not None
    assert "datacontenttype" not in ev_from_http_style.attrs


def test_binary_cloudevents_json_payload_stays_binary_on_nats() -> None:
    # No Content-Type in NATS binary mode, so nothing is misread as structured.
    inner = encode_structured(event(b"1", json_implied=True, id="inner"))
    ev = event(inner, datacontenttype="application/cloudevents+json", id="outer")
    payload, headers = encode_nats(ev, Mode.BINARY)
    assert payload == inner
    assert decode_nats(payload, headers) == ev


def test_json_string_data_keeps_its_quotes_in_binary_mode() -> None:
    ev = decode_structured(orjson.dumps({**BASE, "data": "I'm just a string"}))
    payload, headers = encode_nats(ev, Mode.BINARY)
    assert payload == b'"I\'m just a string"'
    assert headers["ce-datacontenttype"] == "application/json"


def test_encode_structured() -> None:
    ev = event(b"\x00", n=1, f=True)
    payload, headers = encode_nats(ev, Mode.STRUCTURED)
    assert headers == {"Content-Type": STRUCTURED_CONTENT_TYPE}
    assert payload == encode_structured(ev)
    assert decode_nats(payload, headers) == ev


@pytest.mark.parametrize("mode", [Mode.BATCH, Mode.RAW])
def test_encode_nats_rejects_other_modes(mode: Mode) -> None:
    with pytest.raises(ValueError):
        encode_nats(event(), mode)
