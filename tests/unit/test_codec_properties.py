"""Property tests for the codecs (hypothesis).

1. encode -> decode is the identity for random valid events, on every binding
   and mode.  Binary modes carry every attribute as a string and make an
   implied JSON content type explicit, so the expected event there has its
   extensions stringified and ``datacontenttype`` set to the effective
   content type; empty data and no data are the same thing in binary mode.
2. Decoders fed random bytes and random headers/properties raise only
   ``InvalidEvent`` (or return None / ``Mode.RAW``), never another exception.
3. The codec's fast attribute validator agrees with
   ``mesh.core.event.validate_attributes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC
from functools import partial

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mesh.core.codec import (
    Mode,
    canonical_string,
    decode_batch,
    decode_http,
    decode_mqtt,
    decode_nats,
    decode_structured,
    encode_batch,
    encode_http,
    encode_mqtt,
    encode_nats,
    encode_structured,
    percent_decode,
    percent_encode,
)
from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, Event, _validate_fully, valid_names, validate_attributes

RESERVED = {
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
}
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

# Unicode text without control characters (Cc) and unpaired surrogates (Cs).
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
non_empty_text = text.filter(bool)
names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(lambda n: n not in RESERVED)
ext_values: st.SearchStrategy[AttrValue] = st.one_of(text, INT32, st.booleans())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/json",
    "application/vnd.example.reading+json",
]
BINARY_TYPES = [None, "application/octet-stream", "image/png"]
TEXT_TYPES = ["text/plain; charset=utf-8", "text/xml", "application/xml"]


@st.composite
def data_and_type(draw: st.DrawFn) -> tuple[bytes | None, str | None, bool]:
    """(data, datacontenttype, json_implied) that belong together."""
    kind = draw(st.sampled_from(["none", "binary", "json", "implied", "text"]))
    if kind == "none":
        return None, draw(st.sampled_from([None, "application/json", "text/plain"])), False
    if kind == "binary":
        return draw(st.binary(max_size=64)), draw(st.sampled_from(BINARY_TYPES)), False
    if kind == "text":
        return draw(text).encode(), draw(st.sampled_from(TEXT_TYPES)), False
    doc = orjson.dumps(draw(json_values))
    if kind == "implied":
        return doc, None, True
    return doc, draw(st.sampled_from(JSON_TYPES)), False


@st.composite
def events(draw: st.DrawFn) -> Event:
    attrs: dict[str, AttrValue] = {
        "specversion": "1.0",
        "id": draw(non_empty_text),
        "source": draw(non_empty_text),
        "type": draw(non_empty_text),
    }
    if draw(st.booleans()):
        moment = draw(st.datetimes(timezones=st.just(UTC)))
        attrs["time"] = moment.isoformat().replace("+00:00", "Z")
    if draw(st.booleans()):
        attrs["subject"] = draw(non_empty_text)
    if draw(st.booleans()):
        attrs["dataschema"] = "https://schemas.example/" + draw(
            st.from_regex(r"[a-z]{1,8}", fullmatch=True)
        )
    attrs.update(draw(st.dictionaries(names, ext_values, max_size=5)))
    data, content_type, implied = draw(data_and_type())
    if content_type is not None:
        attrs["datacontenttype"] = content_type
    validate_attributes(attrs)
    return Event(attrs, data, json_implied=implied)


def binary_expected(ev: Event) -> Event:
    attrs: dict[str, AttrValue] = {k: canonical_string(v) for k, v in ev.attrs.items()}
    if ev.content_type is not None:
        attrs["datacontenttype"] = ev.content_type
    return Event(attrs, ev.data or None)


def same(a: Event | None, b: Event) -> None:
    assert a is not None
    assert a == b
    assert a.json_implied == b.json_implied


# --------------------------------------------------------------------------
# 1. Round trips


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_structured_round_trip(ev: Event) -> None:
    same(decode_structured(encode_structured(ev)), ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), max_size=4))
def test_batch_round_trip(evs: list[Event]) -> None:
    out = decode_batch(encode_batch(evs))
    assert len(out) == len(evs)
    for got, want in zip(out, evs, strict=True):
        assert isinstance(got, Event)
        same(got, want)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_http_structured_round_trip(ev: Event) -> None:
    mode, out = decode_http(*encode_http(ev, Mode.STRUCTURED))
    assert mode is Mode.STRUCTURED
    assert isinstance(out[0], Event)
    same(out[0], ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_http_binary_round_trip(ev: Event) -> None:
    mode, out = decode_http(*encode_http(ev, Mode.BINARY))
    assert mode is Mode.BINARY
    assert isinstance(out[0], Event)
    same(out[0], binary_expected(ev))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_mqtt5_structured_round_trip(ev: Event) -> None:
    same(decode_mqtt(*encode_mqtt(ev, Mode.STRUCTURED, "5"), "5"), ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_mqtt5_binary_round_trip(ev: Event) -> None:
    same(decode_mqtt(*encode_mqtt(ev, Mode.BINARY, "5"), "5"), binary_expected(ev))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_mqtt311_structured_round_trip(ev: Event) -> None:
    same(decode_mqtt(*encode_mqtt(ev, Mode.STRUCTURED, "3.1.1"), "3.1.1"), ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_nats_structured_round_trip(ev: Event) -> None:
    same(decode_nats(*encode_nats(ev, Mode.STRUCTURED)), ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_nats_binary_round_trip(ev: Event) -> None:
    same(decode_nats(*encode_nats(ev, Mode.BINARY)), binary_expected(ev))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_nats_structured_without_headers_round_trip(ev: Event) -> None:
    payload, _ = encode_nats(ev, Mode.STRUCTURED)
    same(decode_nats(payload, None), ev)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(blacklist_categories=["Cs"])))
def test_percent_encoding_round_trip(value: str) -> None:
    encoded = percent_encode(value)
    assert encoded.isascii()
    assert not any(c in encoded for c in ' "') and all(0x21 <= ord(c) <= 0x7E for c in encoded)
    assert percent_decode(encoded) == value
    # An older sender's RFC 7230 quoted-string ('"' is always percent-encoded,
    # so only the backslash needs escaping inside the quotes).
    quoted = '"' + encoded.replace("\\", "\\\\") + '"'
    assert percent_decode(quoted) == value


# --------------------------------------------------------------------------
# 2. Decoders raise only InvalidEvent

HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-datacontenttype",
            "ce-time",
            "ce-",
            "ce-data",
        ]
    ),
    st.text(max_size=12).map(lambda s: "ce-" + s),
    st.text(max_size=12),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            "1.0",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "application/cloudevents+avro",
            "application/json",
            "%C0%A0",
            '"x\\"',
            "%",
        ]
    ),
    st.text(max_size=30),
)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "data", "data_base64"])
        | st.text(max_size=8),
        json_values,
        max_size=8,
    ).map(lambda d: orjson.dumps({"specversion": "1.0", **d})),
    st.lists(json_values, max_size=4).map(orjson.dumps),
)


def only_invalid_event(call: Callable[[], object]) -> None:
    """Run ``call``; InvalidEvent is the only exception allowed out of it."""
    with contextlib.suppress(InvalidEvent):
        call()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAYLOADS)
def test_json_decoders_raise_only_invalid_event(payload: bytes) -> None:
    only_invalid_event(lambda: decode_structured(payload))
    only_invalid_event(lambda: decode_batch(payload))
    only_invalid_event(lambda: decode_mqtt(payload, None, [], "3.1.1"))
    only_invalid_event(lambda: decode_nats(payload, None))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(HEADER_NAMES | HEADER_NAMES.map(str.upper), HEADER_VALUES, max_size=8), PAYLOADS
)
def test_http_decoder_raises_only_invalid_event(headers: dict[str, str], body: bytes) -> None:
    def call() -> None:
        mode, out = decode_http(headers, body)
        assert isinstance(mode, Mode)
        assert all(isinstance(e, Event | InvalidEvent) for e in out)
        assert (mode is Mode.RAW) == (out == []) or mode is Mode.BATCH

    only_invalid_event(call)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=8) | st.none(), PAYLOADS)
def test_nats_decoder_raises_only_invalid_event(
    headers: dict[str, str] | None, payload: bytes
) -> None:
    only_invalid_event(lambda: decode_nats(payload, headers))


PROPERTY_NAMES = st.sampled_from(
    ["specversion", "id", "source", "type", "datacontenttype", "subject", "data"]
) | st.text(max_size=10)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    PAYLOADS,
    st.none() | HEADER_VALUES,
    st.lists(st.tuples(PROPERTY_NAMES, HEADER_VALUES), max_size=8),
    st.sampled_from(["5", "3.1.1"]),
)
def test_mqtt_decoder_raises_only_invalid_event(
    payload: bytes,
    content_type: str | None,
    props: list[tuple[str, str]],
    protocol: str,
) -> None:
    assert protocol in ("5", "3.1.1")
    only_invalid_event(lambda: decode_mqtt(payload, content_type, props, protocol))  # type: ignore[arg-type]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_percent_decode_raises_only_invalid_event(value: str) -> None:
    only_invalid_event(lambda: percent_decode(value))


# --------------------------------------------------------------------------
# 3. validate_attributes' fast path agrees with its full check


attr_names = st.sampled_from([*sorted(RESERVED), "ext", "Ext", "e_x", "", "a" * 25, "1x"]) | names
attr_values = st.one_of(
    st.sampled_from(["1.0", "0.3", "", "a\x00b", "c\x9fd", "ok", "é"]),
    text,
    st.integers(min_value=-(2**32), max_value=2**32),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"specversion": st.just("1.0"), "id": text, "source": text, "type": text}
    ),
    st.dictionaries(attr_names, attr_values, max_size=6),
)
def test_fast_validator_agrees_with_validate_attributes(
    base: dict[str, AttrValue], extra: dict[str, AttrValue]
) -> None:
    for attrs in (base, {**base, **extra}, extra):
        expected = verdict(_validate_fully, attrs)
        assert verdict(validate_attributes, attrs) == expected
        # A second call (names now remembered) gives the same verdict.
        assert verdict(validate_attributes, attrs) == expected
        # The shortcuts the binding decoders use give it too.
        if valid_names(attrs):
            assert verdict(lambda a: validate_attributes(a, names_ok=True), attrs) == expected
        if all(type(v) is str for v in attrs.values()):
            joined = "".join(str(v) for v in attrs.values())
            assert verdict(partial(validate_attributes, joined=joined), attrs) == expected
            # The JSON decoder's shortcut: no C0 control character anywhere.
            if not any("\x00" <= c <= "\x1f" for c in joined):
                check = partial(validate_attributes, joined=joined, c0_free=True)
                assert verdict(check, attrs) == expected


MINIMAL: dict[str, AttrValue] = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
string_values = st.one_of(
    text,
    st.from_regex(r"[ -~]{0,12}", fullmatch=True),  # printable ASCII
    st.sampled_from(["1.0", "0.3", "", "a\x00b", "tab\tx", "c\x9fd", "del\x7f", "é", "ok"]),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "specversion": st.just("1.0"),
            "id": string_values,
            "source": string_values,
            "type": string_values,
        }
    ),
    st.dictionaries(attr_names.filter(lambda n: n != "data"), string_values, max_size=6),
    st.sets(st.sampled_from(["specversion", "id", "source", "type"])),
)
@example({**MINIMAL, "id": "del\x7f"}, {}, set())
@example(MINIMAL, {"e": "c\x9fd"}, set())
@example(MINIMAL, {"Ext": "x"}, set())
@example(MINIMAL, {"specversion": "0.3"}, set())
@example(MINIMAL, {}, {"specversion"})
@example(MINIMAL, {}, {"id"})
@example(MINIMAL, {}, {"source"})
@example(MINIMAL, {}, {"type"})
def test_structured_decoder_agrees_with_validate_attributes(
    base: dict[str, AttrValue], extra: dict[str, AttrValue], dropped: set[str]
) -> None:
    # The JSON decoder has the fast path inline; with only string members its
    # verdict must be exactly the full check's, first time and once the names
    # are remembered.
    full = {**base, **extra}
    for attrs in (base, full, {k: v for k, v in full.items() if k not in dropped}):
        expected = verdict(_validate_fully, attrs)
        assert verdict(decode_json_members, attrs) == expected
        assert verdict(decode_json_members, attrs) == expected


def decode_json_members(attrs: dict[str, AttrValue]) -> None:
    decode_structured(orjson.dumps(attrs))


def verdict(
    check: Callable[[dict[str, AttrValue]], None], attrs: dict[str, AttrValue]
) -> str | None:
    """None if ``check`` accepts a copy of ``attrs``, else the InvalidEvent reason."""
    try:
        check(dict(attrs))
    except InvalidEvent as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_mqtt_protocol_names(protocol: str) -> None:
    ev = Event({"specversion": "1.0", "id": "1", "source": "s", "type": "t"})
    assert decode_mqtt(*encode_mqtt(ev, Mode.STRUCTURED, protocol), protocol) == ev  # type: ignore[arg-type]
