"""MQTT PUBLISH and PUBACK on the wire, for the bridge's batch path (pure, no I/O).

paho builds a PUBLISH through ``Client.publish``: an ``MQTTMessage`` and an
``MQTTMessageInfo`` (with a ``threading.Condition``) per message, a
``Properties`` object packed by walking all 27 property names, and one queued
packet, written with its own ``send``. The bridge publishes a batch instead:
:func:`publish_packet` encodes each QoS 1 PUBLISH into bytes identical to
paho's (pinned by ``tests/unit/test_mqtt_packets.py``), the batch is written
at once, and :func:`scan_pubacks` reads the PUBACKs that follow in one pass
over the receive buffer.

Encoding refuses what paho refuses (``ValueError``): a packet over the MQTT
limit of 268,435,455 bytes, a string over 65,535 bytes, text that is not
UTF-8 encodable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["MAX_PACKET", "publish_packet", "publish_properties", "scan_pubacks", "varint"]

MAX_PACKET = 268_435_455  # the largest remaining length MQTT can express
_CONTENT_TYPE = 0x03
_USER_PROPERTY = 0x26
_PUBACK = 0x40


def varint(n: int) -> bytes:
    """The MQTT variable byte integer of ``n`` (remaining length, property length)."""
    if n < 128:
        return bytes((n,))
    if n > MAX_PACKET:
        raise ValueError(f"packet too large ({n:,} bytes; MQTT allows {MAX_PACKET:,})")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 65535:
        raise ValueError(f"a string of {len(data):,} bytes (MQTT allows 65,535)")
    return len(data).to_bytes(2, "big") + data


def publish_properties(
    content_type: str | None, user_properties: Sequence[tuple[str, str]]
) -> bytes:
    """MQTT 5 PUBLISH properties: Content Type, then User Properties (paho's order)."""
    if not content_type and not user_properties:
        return b"\x00"
    parts = []
    if content_type:
        parts.append(b"\x03" + _utf8(content_type))
    for key, value in user_properties:
        parts.append(b"\x26" + _utf8(key) + _utf8(value))
    body = b"".join(parts)
    return varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, mid: int, retain: bool, properties: bytes | None
) -> bytes:
    """One QoS 1 PUBLISH (DUP 0); ``properties`` packed for MQTT 5, None for 3.1.1."""
    name = _utf8(topic)
    length = len(name) + 2 + len(payload) + (len(properties) if properties is not None else 0)
    header = b"\x33" if retain else b"\x32"
    mid_bytes = mid.to_bytes(2, "big")
    if properties is None:
        return b"".join((header, varint(length), name, mid_bytes, payload))
    return b"".join((header, varint(length), name, mid_bytes, properties, payload))


def scan_pubacks(
    buf: bytes, pos: int, v5: bool, settle: Callable[[int, int], bool]
) -> tuple[int, int]:
    """Hand each complete PUBACK from ``buf[pos:]`` to ``settle(mid, reason code)``.

    Stops at the first packet that is not a PUBACK of the usual short form,
    is incomplete, or that ``settle`` declines (paho then reads it as usual).
    Returns the position after the last PUBACK taken and how many were taken.
    """
    end = len(buf)
    taken = 0
    while pos + 4 <= end and buf[pos] == _PUBACK:
        length = buf[pos + 1]
        if length < 2 or length > 127 or (not v5 and length != 2) or pos + 2 + length > end:
            break
        code = buf[pos + 4] if length > 2 else 0
        if not settle((buf[pos + 2] << 8) | buf[pos + 3], code):
            break
        pos += 2 + length
        taken += 1
    return pos, taken
