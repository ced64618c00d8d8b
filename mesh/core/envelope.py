"""An event in transit through the mesh, and its compact binary record.

The record is what outboxes store and peer links carry: a length-prefixed
orjson header (mesh topic, origin node, hop count, destination set, context
attributes, flags) followed by the data bytes, unchanged. Decoding needs no
base64 and no re-parsing of data, so events stay byte-exact hop to hop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from mesh.core.errors import LinkProtocolError
from mesh.core.event import Event
from mesh.core.frames import NODE_ID

__all__ = ["Envelope", "decode_batch_frame", "decode_record", "encode_batch_frame", "encode_record"]

_U32 = struct.Struct(">I")
_BATCH = struct.Struct(">cQI")
_HAS_DATA = 1
_JSON_IMPLIED = 2


@dataclass(slots=True)
class Envelope:
    """An event plus its routing state.

    ``dests`` is the set of destination nodes the receiving hop is responsible
    for (None inside a node, for local egress outboxes).
    """

    event: Event
    topic: str
    origin: str
    hops: int = 0
    dests: frozenset[str] | None = None


def encode_record(env: Envelope) -> bytes:
    ev = env.event
    flags = (_HAS_DATA if ev.data is not None else 0) | (_JSON_IMPLIED if ev.json_implied else 0)
    header = orjson.dumps(
        [
            env.topic,
            env.origin,
            env.hops,
            sorted(env.dests) if env.dests is not None else None,
            ev.attrs,
            flags,
        ]
    )
    return b"".join((_U32.pack(len(header)), header, ev.data or b""))


def decode_record(buf: bytes | memoryview) -> Envelope:
    """The envelope in a record; LinkProtocolError if it is malformed.

    A record may come from a peer, so each header field's type is checked:
    a wrong one (a string of flags, a number for dests) must be refused here,
    not fail deep in the router or an egress worker. The attribute *values*
    are the caller's to validate (the link does, before it stores an event).
    """
    mv = memoryview(buf)
    try:
        (n,) = _U32.unpack_from(mv, 0)
        if 4 + n > len(mv):
            raise ValueError(f"header of {n} bytes runs past the end of the record")
        topic, origin, hops, dests, attrs, flags = orjson.loads(mv[4 : 4 + n])
    except (struct.error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise LinkProtocolError("?", f"malformed event record: {exc}") from exc
    bad = _bad_header(topic, origin, hops, dests, attrs, flags)
    if bad is not None:
        raise LinkProtocolError("?", f"malformed event record: {bad}")
    data = bytes(mv[4 + n :]) if flags & _HAS_DATA else None
    event = Event(attrs, data, json_implied=bool(flags & _JSON_IMPLIED))
    return Envelope(event, topic, origin, hops, frozenset(dests) if dests is not None else None)


def _bad_header(
    topic: object, origin: object, hops: object, dests: object, attrs: object, flags: object
) -> str | None:
    """What is wrong with a record header's fields, or None."""
    if type(topic) is not str or not topic:
        return "topic must be a non-empty string"
    if type(origin) is not str or not NODE_ID.fullmatch(origin):
        return "origin must be a node id"
    if type(hops) is not int or hops < 0:
        return "hops must be a non-negative integer"
    if dests is not None and (
        type(dests) is not list or not all(type(d) is str and NODE_ID.fullmatch(d) for d in dests)
    ):
        return "dests must be null or a list of node ids"
    if type(attrs) is not dict:
        return "attributes must be an object"
    if type(flags) is not int or not 0 <= flags <= _HAS_DATA | _JSON_IMPLIED:
        return "unknown flags"
    return None


def encode_batch_frame(seq: int, records: list[bytes]) -> bytes:
    parts = [_BATCH.pack(b"B", seq, len(records))]
    for r in records:
        parts.append(_U32.pack(len(r)))
        parts.append(r)
    return b"".join(parts)


def decode_batch_frame(frame: bytes) -> tuple[int, list[memoryview]]:
    """Split a batch frame into (sequence number, records); records are views."""
    mv = memoryview(frame)
    try:
        tag, seq, count = _BATCH.unpack_from(mv, 0)
        if tag != b"B":
            raise ValueError(f"unknown frame tag {tag!r}")
        pos = _BATCH.size
        out = []
        for _ in range(count):
            (n,) = _U32.unpack_from(mv, pos)
            pos += 4
            if pos + n > len(mv):
                raise ValueError("record runs past the end of the frame")
            out.append(mv[pos : pos + n])
            pos += n
        if pos != len(mv):
            raise ValueError(f"{len(mv) - pos} bytes after the last record")
    except (struct.error, ValueError) as exc:
        raise LinkProtocolError("?", f"malformed batch frame: {exc}") from exc
    return seq, out
