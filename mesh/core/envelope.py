"""An event in transit through the mesh, and its compact binary record.

The record is what outboxes store and peer links carry: a length-prefixed
orjson header (mesh topic, origin node, hop count, destination set, context
attributes, flags and, from link protocol 4, the ingress time) followed by
the data bytes, unchanged. Decoding needs no base64 and no re-parsing of
data, so events stay byte-exact hop to hop.

The ingress time (epoch seconds when the event's first node accepted it)
travels with the event so the last node can measure the latency across the
mesh (``mesh_event_latency_seconds``); it is not a CloudEvents attribute and no
consumer sees it. A record without it (stored by an older version, or sent
by an older peer) is valid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from mesh.core.errors import LinkProtocolError
from mesh.core.event import Event
from mesh.core.frames import NODE_ID

__all__ = [
    "Envelope",
    "decode_batch_frame",
    "decode_record",
    "encode_batch_frame",
    "encode_record",
    "without_ingress_time",
]

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
    t_in: float | None = None  # epoch seconds the ingress node accepted it


def encode_record(env: Envelope) -> bytes:
    ev = env.event
    flags = (_HAS_DATA if ev.data is not None else 0) | (_JSON_IMPLIED if ev.json_implied else 0)
    fields = [
        env.topic,
        env.origin,
        env.hops,
        sorted(env.dests) if env.dests is not None else None,
        ev.attrs,
        flags,
    ]
    if env.t_in is not None:
        fields.append(env.t_in)
    header = orjson.dumps(fields)
    return b"".join((_U32.pack(len(header)), header, ev.data or b""))


def without_ingress_time(rec: bytes | memoryview) -> bytes:
    """``rec`` as a peer older than link protocol 4 reads it (six header fields)."""
    mv = memoryview(rec)
    (n,) = _U32.unpack_from(mv, 0)
    try:
        fields = orjson.loads(mv[4 : 4 + n])
    except orjson.JSONDecodeError:
        return bytes(rec)  # malformed: the receiver dead-letters it as it is
    if not isinstance(fields, list) or len(fields) != 7:
        return bytes(rec)
    header = orjson.dumps(fields[:6])
    return b"".join((_U32.pack(len(header)), header, mv[4 + n :]))


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
        fields = orjson.loads(mv[4 : 4 + n])
        if type(fields) is not list or len(fields) not in (6, 7):
            raise ValueError("the header is not a list of 6 or 7 fields")
        topic, origin, hops, dests, attrs, flags = fields[:6]
    except (struct.error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise LinkProtocolError("?", f"malformed event record: {exc}") from exc
    bad = _bad_header(topic, origin, hops, dests, attrs, flags)
    t_in = fields[6] if len(fields) == 7 else None
    if bad is None and t_in is not None and (type(t_in) not in (int, float) or t_in < 0):
        bad = "the ingress time must be a non-negative number"
    if bad is not None:
        raise LinkProtocolError("?", f"malformed event record: {bad}")
    data = bytes(mv[4 + n :]) if flags & _HAS_DATA else None
    event = Event(attrs, data, json_implied=bool(flags & _JSON_IMPLIED))
    ds = frozenset(dests) if dests is not None else None
    return Envelope(event, topic, origin, hops, ds, None if t_in is None else float(t_in))


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
