"""The bridge's PUBLISH encoding is paho's, byte for byte; PUBACKs read as paho reads them."""

from __future__ import annotations

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridges.mqtt_packets import (
    MAX_PACKET,
    publish_packet,
    publish_properties,
    scan_pubacks,
    varint,
)

CASES = [
    ("a/b", b"", None, ()),
    ("sensors/\u00e9t\u00e9/temp", b'{"t":21.5}', "application/json", ()),
    ("x", b"p" * 200, "application/cloudevents+json", (("ce_id", "1"),)),
    (
        "site/area/dev/metric",
        b"z" * 20_000,  # a three-byte remaining length
        "text/plain; charset=utf-8",
        (("ce_id", "id-\u2603"), ("ce_type", "t.x"), ("ce_id", "twice")),
    ),
    ("t", b"q" * 127, None, (("k", ""),)),
]


def paho_bytes(
    v5: bool, topic: str, payload: bytes, mid: int, retain: bool, ct: str | None, user: tuple
) -> bytes:
    """What paho's own ``_send_publish`` queues for this message."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    queued: list[bytes] = []
    c._sock = object()  # only checked for None
    c._packet_queue = lambda cmd, packet, mid, qos, info=None: queued.append(bytes(packet))  # type: ignore[method-assign]
    props = None
    if v5 and (ct or user):
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if ct:
            props.ContentType = ct
        if user:
            props.UserProperty = list(user)
    try:
        c._send_publish(mid, topic.encode(), payload, 1, retain, False, None, props)
    finally:
        c._sock = None
    return queued[0]


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_a_publish_is_byte_for_byte_what_paho_sends(v5: bool, retain: bool, case: tuple) -> None:
    topic, payload, ct, user = case
    for mid in (1, 255, 256, 65535):
        props = publish_properties(ct, user) if v5 else None
        ours = publish_packet(topic, payload, mid, retain, props)
        assert ours == paho_bytes(v5, topic, payload, mid, retain, ct, user)


def test_varint_boundaries() -> None:
    assert [varint(n) for n in (0, 127, 128, 16383, 16384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]
    assert varint(MAX_PACKET) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError, match="too large"):
        varint(MAX_PACKET + 1)


def test_what_mqtt_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="65,535"):
        publish_properties("x" * 65536, ())
    with pytest.raises(ValueError, match="65,535"):
        publish_properties(None, (("k", "v" * 70_000),))
    with pytest.raises(UnicodeEncodeError):
        publish_packet("bad\udc80", b"", 1, False, None)


def test_pubacks_are_taken_until_one_is_not_ours_or_not_complete() -> None:
    settled: list[tuple[int, int]] = []

    def settle(mid: int, code: int) -> bool:
        if mid == 9:
            return False
        settled.append((mid, code))
        return True

    buf = (
        b"\x40\x02\x00\x01"  # short form
        + b"\x40\x03\x01\x00\x87"  # MQTT 5 with a reason code (Not authorized)
        + b"\x40\x04\x00\x03\x10\x00"  # reason code and an empty property length
        + b"\x40\x02\x00\x09"  # declined: left for paho
        + b"\x40\x02\x00\x04"
    )
    pos, taken = scan_pubacks(buf, 0, True, settle)
    assert (taken, settled) == (3, [(1, 0), (256, 0x87), (3, 0x10)])
    assert buf[pos:] == b"\x40\x02\x00\x09\x40\x02\x00\x04"
    # an incomplete PUBACK, or another packet first, stops the scan
    assert scan_pubacks(b"\x40\x02\x00", 0, True, settle) == (0, 0)
    assert scan_pubacks(b"\xd0\x00\x40\x02\x00\x05", 0, True, settle) == (0, 0)
    # MQTT 3.1.1 has no reason codes: anything but the short form is paho's to judge
    assert scan_pubacks(b"\x40\x03\x00\x05\x00", 0, False, settle) == (0, 0)
