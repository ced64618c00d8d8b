"""The W3C trace context: taken from any protocol's message, written in each protocol's form."""

from __future__ import annotations

from mesh.core.event import AttrValue
from mesh.core.message import Message
from mesh.core.tracecontext import adopt, from_message, stamp, valid_traceparent

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_only_valid_traceparents_are_taken() -> None:
    assert valid_traceparent(TP)
    assert not valid_traceparent("ff" + TP[2:])  # version ff is invalid
    assert not valid_traceparent(f"00-{'0' * 32}-00f067aa0ba902b7-01")  # zero trace id
    assert not valid_traceparent(f"00-4bf92f3577b34da6a3ce929d0e0e4736-{'0' * 16}-01")
    assert not valid_traceparent(TP.upper())
    assert not valid_traceparent(TP + "-x")
    assert from_message(Message("t", b"", headers={"traceparent": "nonsense"})) is None


def test_a_context_comes_from_a_header_or_a_user_property() -> None:
    http = Message("t", b"", headers={"traceparent": TP, "tracestate": "vendor=1"})
    assert from_message(http) == (TP, "vendor=1")
    nats = Message("t", b"", headers={"Traceparent": TP})
    assert from_message(nats) == (TP, None)
    mqtt = Message("t", b"", user_properties=[("a", "b"), ("traceparent", TP)])
    assert from_message(mqtt) == (TP, None)
    too_long = Message("t", b"", headers={"traceparent": TP, "tracestate": "x" * 600})
    assert from_message(too_long) == (TP, None)


def test_an_event_keeps_its_own_context() -> None:
    attrs: dict[str, AttrValue] = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
    adopt(attrs, (TP, "v=1"))
    assert attrs == {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
    fresh: dict[str, AttrValue] = {}
    adopt(fresh, (TP, "v=1"))
    assert fresh == {"traceparent": TP, "tracestate": "v=1"}


def test_egress_writes_the_w3c_header_and_user_property_once() -> None:
    attrs: dict[str, AttrValue] = {"traceparent": TP, "tracestate": "v=1"}
    # HTTP or NATS binary mode: ce-traceparent is there; the W3C header is added.
    msg = Message("t", b"", headers={"ce-traceparent": TP})
    stamp(msg, attrs)
    assert msg.headers == {"ce-traceparent": TP, "traceparent": TP, "tracestate": "v=1"}
    # MQTT 5 binary mode: the attribute's user property already is the W3C one.
    mqtt = Message("t", b"", user_properties=[("traceparent", TP), ("tracestate", "v=1")])
    stamp(mqtt, attrs)
    assert list(mqtt.user_properties) == [("traceparent", TP), ("tracestate", "v=1")]
    # Structured or data mode: nothing there yet, both forms are added.
    plain = Message("t", b"")
    stamp(plain, attrs)
    assert plain.headers["traceparent"] == TP
    assert list(plain.user_properties) == [("traceparent", TP), ("tracestate", "v=1")]
