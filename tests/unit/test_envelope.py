"""Event records: what a peer sends in a batch is checked field by field when decoded."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from mesh.core.envelope import (
    Envelope,
    decode_batch_frame,
    decode_record,
    encode_batch_frame,
    encode_record,
)
from mesh.core.errors import LinkProtocolError
from mesh.core.event import Event

ATTRS = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
GOOD: list[Any] = ["a/b", "node-a", 1, ["node-b"], ATTRS, 1]


def record(header: Any, data: bytes = b"{}") -> bytes:
    raw = orjson.dumps(header)
    return struct.pack(">I", len(raw)) + raw + data


def test_a_record_round_trips() -> None:
    env = Envelope(Event(dict(ATTRS), b"{}"), "a/b", "node-a", 2, frozenset({"node-b"}))
    back = decode_record(encode_record(env))
    assert (back.topic, back.origin, back.hops, back.dests) == (
        "a/b",
        "node-a",
        2,
        frozenset({"node-b"}),
    )
    assert back.event == env.event
    assert decode_record(record(GOOD)).dests == frozenset({"node-b"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (0, 1),
        (0, None),
        (0, ""),
        (1, 1),
        (1, "NOT A NODE"),
        (2, "1"),
        (2, -1),
        (2, 1.5),
        (3, 5),
        (3, "node-b"),  # a string is iterable, but not a list of node ids
        (3, [[1]]),
        (3, [1]),
        (4, []),
        (4, "s"),
        (5, "x"),
        (5, None),
        (5, 8),
    ],
)
def test_a_header_field_of_the_wrong_type_is_a_protocol_error(field: int, value: Any) -> None:
    header = list(GOOD)
    header[field] = value
    with pytest.raises(LinkProtocolError, match="malformed event record"):
        decode_record(record(header))


@pytest.mark.parametrize(
    "buf",
    [b"", b"\x00\x00", record(GOOD[:5]), record({}), struct.pack(">I", 99) + b"[]", b"\x00" * 8],
)
def test_a_truncated_or_misshapen_record_is_a_protocol_error(buf: bytes) -> None:
    with pytest.raises(LinkProtocolError, match="malformed event record"):
        decode_record(buf)


def test_bytes_after_the_last_record_make_a_batch_frame_malformed() -> None:
    frame = encode_batch_frame(7, [b"abc"])
    assert decode_batch_frame(frame)[0] == 7
    with pytest.raises(LinkProtocolError, match="1 bytes after the last record"):
        decode_batch_frame(frame + b"x")
    with pytest.raises(LinkProtocolError, match="after the last record"):
        decode_batch_frame(encode_batch_frame(8, []) + bytes(1 << 20))
