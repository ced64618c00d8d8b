"""JSON ``data`` is carried as the text it arrived as, in structured and batch mode.

Decoding a JSON-format event must not re-serialise its data: big integers,
number spellings, escapes, key order and whitespace inside ``data`` survive,
and every egress mode (binary, structured, data) sends those bytes.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridges.nats import NatsBinding
from mesh.core.codec import (
    Mode,
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
)
from mesh.core.event import Event

HEAD = b'"specversion":"1.0","id":"e-1","source":"/s","type":"t"'
TRICKY: list[bytes] = [
    b'{"big": 123456789012345678901234567890}',
    b'{"a" :  1.50}',
    b'{ "z": 1,\n\t"a": [ 1.0 , 2e10, -0.0 ] ,"m" : {} }',  # key order and spacing
    b'{"q": "say \\"hi\\" {not a brace} [nor this]", "e": "\\u00e9\\n"}',
    b'{"data": {"data": 1}, "x": "data"}',  # nested data keys
    b'[1.50, "}", {"k": null}]',
    b"123456789012345678901234567890",
    b"1.50",
    b'"a string with \\" and }"',
    b"true",
    b"null",
    b"{}",
]


def structured(data: bytes, *, before: bytes = b"", after: bytes = b"", ct: bool = True) -> bytes:
    ct_member = b',"datacontenttype":"application/json"' if ct else b""
    return b"{" + HEAD + ct_member + before + b',"data" : ' + data + b" " + after + b"}"


@pytest.mark.parametrize("data", TRICKY)
@pytest.mark.parametrize(
    ("before", "after"),
    [(b"", b""), (b',"subject":"data"', b""), (b"", b', "subject" : "x"'), (b"", b',"n":5')],
)
def test_structured_decode_keeps_the_data_text(data: bytes, before: bytes, after: bytes) -> None:
    ev = decode_structured(structured(data, before=before, after=after))
    assert ev.data == data


@pytest.mark.parametrize("data", TRICKY)
def test_data_without_a_content_type_is_implied_json_and_kept(data: bytes) -> None:
    ev = decode_structured(structured(data, ct=False))
    assert ev.data == data
    assert ev.content_type == "application/json"


@pytest.mark.parametrize("data", TRICKY)
def test_every_egress_mode_sends_the_bytes_as_received(data: bytes) -> None:
    ev = decode_structured(structured(data))
    # structured: embedded verbatim, and decodes to the same text again
    body = encode_structured(ev)
    assert data in body
    assert decode_structured(body).data == data
    # binary and data mode: the bytes themselves
    assert encode_http(ev, Mode.BINARY)[1] == data
    assert encode_nats(ev, Mode.BINARY)[0] == data
    assert encode_mqtt(ev, Mode.BINARY, "5")[0] == data
    assert NatsBinding().encode(ev, Mode.DATA, "x").payload == data


def test_the_issue_examples_survive() -> None:
    ev = decode_structured(structured(b'{"big": 123456789012345678901234567890}'))
    assert ev.data == b'{"big": 123456789012345678901234567890}'
    ev = decode_structured(structured(b'{"a" :  1.50}'))
    assert ev.data == b'{"a" :  1.50}'


@pytest.mark.parametrize("data", TRICKY)
def test_protocol_decoders_in_structured_mode_keep_the_text(data: bytes) -> None:
    body = structured(data)
    ct = "application/cloudevents+json"
    assert decode_http({"content-type": ct}, body)[1][0].data == data  # type: ignore[union-attr]
    mqtt5 = decode_mqtt(body, ct, [], "5")
    assert mqtt5 is not None and mqtt5.data == data
    mqtt311 = decode_mqtt(body, None, [], "3.1.1")
    assert mqtt311 is not None and mqtt311.data == data
    nats = decode_nats(body, {"content-type": ct})
    assert nats is not None and nats.data == data
    sniffed = decode_nats(body, None)
    assert sniffed is not None and sniffed.data == data


def test_batch_elements_keep_their_data_text() -> None:
    elements = [structured(d) for d in TRICKY]
    elements.insert(3, b"{" + HEAD + b',"id":"no-data"}')  # an element without data
    elements.insert(5, b"{" + HEAD + b',"datacontenttype":"text/plain","data":"data"}')
    body = b"[ " + b" ,\n".join(elements) + b" ]"
    out = decode_batch(body)
    got = [e.data for e in out if isinstance(e, Event)]
    assert got == [*TRICKY[:3], None, TRICKY[3], b"data", *TRICKY[4:]]
    # and a batch encodes them verbatim
    again = decode_batch(encode_batch([e for e in out if isinstance(e, Event)]))
    assert [e.data for e in again if isinstance(e, Event)] == got


def test_an_invalid_batch_element_with_nested_data_keys_does_not_misplace_the_rest() -> None:
    bad = b'{"specversion":"1.0","id":{"data":[1.50]},"source":"/s","type":"t","data":[1.50]}'
    good = structured(b"[1.50]")
    out = decode_batch(b"[" + bad + b", 5, " + good + b"," + good + b"]")
    assert [type(e).__name__ for e in out] == ["InvalidEvent", "InvalidEvent", "Event", "Event"]
    assert [e.data for e in out if isinstance(e, Event)] == [b"[1.50]", b"[1.50]"]


def test_duplicate_data_members_give_the_value_json_readers_keep() -> None:
    # orjson keeps the last member; the text carried must be that value.
    body = b"{" + HEAD + b',"data":{"a":1},"datacontenttype":"application/json","data":[2]}'
    assert decode_structured(body).data == b"[2]"
    body = b"{" + HEAD + b',"data":{"a" : 1.50},"data":{"b":2}}'
    assert orjson.loads(decode_structured(body).data or b"") == {"b": 2}


def test_an_escaped_key_name_still_finds_the_value() -> None:
    body = b"{" + HEAD + b',"d\\u0061ta":{"data" : {"a":1.50}}}'
    ev = decode_structured(body)
    assert orjson.loads(ev.data or b"") == {"data": {"a": 1.5}}


def test_data_base64_is_decoded_and_sent_as_bytes() -> None:
    raw = b"\x00\xff{not json"
    b64 = base64.b64encode(raw)
    body = b"{" + HEAD + b',"datacontenttype":"application/octet-stream","data_base64":"' + b64
    ev = decode_structured(body + b'"}')
    assert ev.data == raw
    assert encode_nats(ev, Mode.BINARY)[0] == raw
    assert decode_structured(encode_structured(ev)).data == raw


def test_a_non_json_content_type_carries_the_string_as_utf8() -> None:
    body = b"{" + HEAD + b',"datacontenttype":"text/plain","data":"1.50 \\u00e9"}'
    assert decode_structured(body).data == "1.50 é".encode()


# Any JSON value, written with random spacing, at a random member position.
_WS = st.sampled_from(["", " ", "\n", "\t ", "  "])
_SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["1.50", "-0.0", "2e10", "1E-3", "true", "false", "null"]),
    st.text(alphabet='ab"\\{}[]:,é\n', max_size=8).map(lambda s: orjson.dumps(s).decode()),
    st.sampled_from(['"data"', '"\\u0041"', '"\\"}"']),
)


def _container(children: Any) -> Any:
    keys = st.sampled_from(["a", "data", "z", "}", '"'])
    member = st.tuples(keys.map(lambda k: orjson.dumps(k).decode()), _WS, _WS, children)
    obj = st.lists(member, max_size=4).map(
        lambda ms: "{" + ",".join(f"{k}{w1}:{w2}{v}" for k, w1, w2, v in ms) + "}"
    )
    arr = st.lists(st.tuples(_WS, children), max_size=4).map(
        lambda xs: "[" + ",".join(f"{w}{v}" for w, v in xs) + "]"
    )
    return st.one_of(obj, arr)


json_texts = st.recursive(_SCALARS, _container, max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(json_texts, _WS, st.integers(min_value=0, max_value=4), st.booleans())
def test_any_json_data_text_survives(text: str, ws: str, position: int, batch: bool) -> None:
    data = text.encode()
    members = [b'"specversion":"1.0"', b'"id":"e"', b'"source":"/s"', b'"type":"t"']
    members.insert(position, b'"data"' + ws.encode() + b":" + ws.encode() + data)
    body = b"{" + b",".join(members) + ws.encode() + b"}"
    if batch:
        out = decode_batch(b"[" + body + b"," + body + b"]")
        assert [e.data for e in out if isinstance(e, Event)] == [data, data]
    else:
        assert decode_structured(body).data == data
