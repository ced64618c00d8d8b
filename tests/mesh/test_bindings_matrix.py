"""Every ingress form x every egress form, across two nodes with real brokers.

An event arrives with the same attributes (extensions of string, integer,
boolean and URI types included; binary modes carry every value as its
canonical string, so those are compared as strings) and byte-identical data.
Raw payloads arrive with the attributes their ingress rule maps. Every
arrival is also read by a test-side oracle written from the binding specs
(tests.mesh.binding_oracle; the cloudevents SDK for webhooks), independent of
mesh.core.codec; binary-mode data is compared as the raw bytes on the wire.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from mesh.core.codec import (
    Mode,
    canonical_string,
    encode_http,
    encode_mqtt,
    encode_nats,
    encode_structured,
)
from mesh.core.event import Event
from mesh.testing import Mosquitto, NatsServer
from tests.mesh import binding_oracle
from tests.mesh.bindings_harness import EGRESS_FORMS, Arrival, Harness, bindings_harness
from tests.shared import SHARED_DIR

EXTENSIONS: dict[str, Any] = {
    "tenant": "acme",
    "priority": 7,
    "urgent": True,
    "callback": "https://example.com/cb?x=1",
}
TYPED_FORMS = {
    "http-structured",
    "http-batch",
    "mqtt5-structured",
    "mqtt311-structured",
    "nats-structured",
}
STRUCTURED_OUT = {"webhook-structured", "mqtt5-structured", "mqtt311-structured", "nats-structured"}


def make_event(form: str, tag: str, data: bytes, content_type: str | None) -> Event:
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"id-{form}",
        "source": f"/matrix/{form}",
        "type": "com.example.matrix",
        "subject": form,
        "time": "2026-11-26T07:00:00.123Z",
        **EXTENSIONS,
    }
    if content_type is not None:
        attrs["datacontenttype"] = content_type
    return Event(attrs, data)


def strings(attrs: dict[str, Any]) -> dict[str, str]:
    return {k: canonical_string(v) for k, v in attrs.items()}


def oracle(arr: Arrival) -> binding_oracle.Decoded:
    """What the spec-written decoder reads from an arrival's wire form."""
    if arr.form.startswith("webhook-"):
        return binding_oracle.http_sdk(arr.headers, arr.payload)
    if arr.form.startswith("mqtt5-"):
        return binding_oracle.mqtt5(arr.payload, arr.content_type, arr.user_properties)
    if arr.form == "mqtt311-structured":
        return binding_oracle.mqtt311(arr.payload)
    assert arr.form.startswith("nats-"), arr.form
    return binding_oracle.nats(arr.payload, arr.headers)


def comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as canonical strings, ``time`` as an instant (the SDK parses it)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k == "time":
            out[k] = v if isinstance(v, datetime) else datetime.fromisoformat(v)
        else:
            out[k] = canonical_string(v)
    return out


def check_oracle(arr: Arrival, attrs: dict[str, Any], data: bytes, typed: bool) -> None:
    """The oracle's reading of ``arr`` is the event sent: ``attrs`` and ``data``."""
    got = oracle(arr)
    where = f"{attrs.get('id')} via {arr.form} (oracle)"
    want_mode = "binary" if arr.form.endswith("-binary") else "structured"
    assert got.mode == want_mode, where
    assert comparable(got.attrs) == comparable(attrs), where
    if want_mode == "binary":
        assert got.data == data, f"{where}: data bytes differ"
        return
    if typed and not arr.form.startswith("webhook-"):
        assert got.attrs == attrs, where  # JSON keeps native types
    if got.data is not None:
        assert got.data == data, f"{where}: data bytes differ"
    else:
        assert got.json == orjson.loads(data), f"{where}: JSON data differs"


async def send_all(h: Harness) -> dict[str, tuple[Event, bool]]:
    """Send one event per ingress form; return id -> (event as sent, typed extensions?)."""
    tag = h.tag
    json_data = orjson.dumps({"reading": 21.5, "unit": "C", "tags": ["a", "b"]})
    sent: dict[str, tuple[Event, bool]] = {}

    async with aiohttp.ClientSession() as http:
        # HTTP binary, with bytes that are not text.
        ev = make_event("http-binary", tag, bytes(range(256)), "application/octet-stream")
        headers, body = encode_http(ev, Mode.BINARY)
        r = await http.post(f"{h.http_a}/{tag}/http/bin", data=body, headers=headers)
        assert r.status == 202, await r.text()
        sent[ev.id] = (ev, False)
        # HTTP structured, JSON data.
        ev = make_event("http-structured", tag, json_data, "application/json")
        headers, body = encode_http(ev, Mode.STRUCTURED)
        r = await http.post(f"{h.http_a}/{tag}/http/st", data=body, headers=headers)
        assert r.status == 202, await r.text()
        sent[ev.id] = (ev, True)
        # HTTP batch of two: JSON data and text data.
        e1 = make_event("http-batch", tag, json_data, "application/json")
        e2 = make_event("http-batch-2", tag, "Grüße, 🌎".encode(), "text/plain; charset=utf-8")
        body = b"[" + encode_structured(e1) + b"," + encode_structured(e2) + b"]"
        r = await http.post(
            f"{h.http_a}/{tag}/http/batch",
            data=body,
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert r.status == 202, await r.text()
        sent[e1.id] = (e1, True)
        sent[e2.id] = (e2, True)

    # MQTT 5 binary and structured.
    ev = make_event("mqtt5-binary", tag, json_data, "application/json")
    payload, ct, props = encode_mqtt(ev, Mode.BINARY, "5")
    h.mqtt_a.publish(
        f"{tag}/m5/bin", payload, content_type=ct, user_properties=props
    ).wait_for_publish(10)
    sent[ev.id] = (ev, False)
    ev = make_event("mqtt5-structured", tag, b"<xml>yes</xml>", "application/xml")
    payload, ct, props = encode_mqtt(ev, Mode.STRUCTURED, "5")
    h.mqtt_a.publish(f"{tag}/m5/st", payload, content_type=ct).wait_for_publish(10)
    sent[ev.id] = (ev, True)
    # MQTT 3.1.1 structured.
    ev = make_event("mqtt311-structured", tag, json_data, "application/json")
    payload, _ct, _props = encode_mqtt(ev, Mode.STRUCTURED, "3.1.1")
    h.mqtt311_a.publish(f"{tag}/m3/st", payload).wait_for_publish(10)
    sent[ev.id] = (ev, True)
    # NATS binary and structured.
    ev = make_event("nats-binary", tag, b"\x00\x01binary\xff", None)
    payload, headers = encode_nats(ev, Mode.BINARY)
    await h.nats_a.publish(f"{tag}.nats.bin", payload, headers=headers)
    sent[ev.id] = (ev, False)
    ev = make_event("nats-structured", tag, json_data, "application/json")
    payload, headers = encode_nats(ev, Mode.STRUCTURED)
    await h.nats_a.publish(f"{tag}.nats.st", payload, headers=headers)
    sent[ev.id] = (ev, True)
    await h.nats_a.flush()
    return sent


def check_event(arr: Arrival, want: Event, typed: bool) -> None:
    got = arr.event
    assert got is not None, f"{arr.form}: not decoded as a CloudEvent"
    where = f"{want.id} via {arr.form}"
    assert got.data == want.data, f"{where}: data differs"
    assert got.content_type == want.content_type, where
    if typed and arr.form in STRUCTURED_OUT:
        assert got.attrs == want.attrs, where  # native types kept end to end
    else:
        assert strings(got.attrs) == strings(want.attrs), where


async def test_every_ingress_form_reaches_every_egress_form(
    tmp_path: Path,
    mosquitto: Mosquitto,
    nats_server: NatsServer,
    mosquitto_b: Mosquitto,
    nats_server_b: NatsServer,
) -> None:
    async with bindings_harness(tmp_path, mosquitto, nats_server, mosquitto_b, nats_server_b) as h:
        sent = await send_all(h)
        raw = orjson.dumps({"device": "d7", "celsius": 19.25})
        h.mqtt_a.publish(f"{h.tag}/raw/d7", raw).wait_for_publish(10)
        await h.wait_arrivals(len(sent) + 1)

        by_form = h.by_form()
        for form in EGRESS_FORMS:
            arrivals = by_form[form]
            assert len(arrivals) == len(sent) + 1, form
            if form == "data":
                payloads = sorted(a.payload for a in arrivals)
                assert payloads == sorted([e.data or b"" for e, _ in sent.values()] + [raw])
                continue
            seen = set()
            for arr in arrivals:
                assert arr.event is not None
                if arr.event.attrs.get("type") == "com.example.raw":
                    got = arr.event
                    assert got.data == raw
                    assert got.attrs["source"] == "/devices/d7"
                    assert got.attrs["subject"] == "d7"
                    assert got.attrs["site"] == "a"
                    assert got.content_type == "application/json"
                    assert got.attrs["id"] and got.attrs["time"]
                    check_oracle(arr, dict(got.attrs), raw, False)
                    seen.add("raw")
                    continue
                want, typed = sent[arr.event.id]
                check_event(arr, want, typed)
                check_oracle(arr, dict(want.attrs), want.data or b"", typed)
                seen.add(want.id)
            assert seen == {*sent, "raw"}, form


def conformance_cases() -> list[dict[str, Any]]:
    """The v1.0 documents of cloudevents/conformance, as in the upstream YAML files."""
    root = SHARED_DIR / "conformance" / "cloudevents-http"
    cases = []
    for name in ("v1.yaml", "v1.0/v1_minimum.yaml"):
        path = root / name
        if not path.exists():
            pytest.fail(f"{path} is missing: the conformance data must sit beside the project")
        for doc in yaml.load_all(path.read_text(), Loader=yaml.BaseLoader):
            if doc:
                cases.append(doc)
    return cases


async def test_cloudevents_conformance_cases_arrive_intact(
    tmp_path: Path,
    mosquitto: Mosquitto,
    nats_server: NatsServer,
    mosquitto_b: Mosquitto,
    nats_server_b: NatsServer,
) -> None:
    cases = conformance_cases()
    assert len(cases) == 8
    async with bindings_harness(tmp_path, mosquitto, nats_server, mosquitto_b, nats_server_b) as h:
        expected: dict[str, tuple[dict[str, str], bytes, bool]] = {}
        async with aiohttp.ClientSession() as http:
            for n, case in enumerate(cases):
                ctx = dict(case["ContextAttributes"])
                ext = ctx.pop("Extensions", {}) or {}
                # YAML's literal block style (|) ends a value with a newline. A header
                # cannot carry it and a CloudEvents String cannot contain a control
                # character, so attribute values are taken without it; Data keeps it.
                attrs = {k: v.rstrip("\n") for k, v in {**ctx, **ext}.items()}
                attrs["id"] = f"{attrs['id']}-{n}"  # two documents share an id
                data = case["Data"].encode()
                mode = case.get("Mode", "binary")
                transport = dict(case.get("TransportExtensions", {}) or {})
                if mode == "binary":
                    ev = Event(dict(attrs), data)
                    headers, body = encode_http(ev, Mode.BINARY)
                    want_data, json_value = data, False
                else:
                    obj: dict[str, Any] = dict(attrs)
                    ct = attrs.get("datacontenttype", "application/json")
                    if ct.startswith("application/json"):
                        obj["data"] = orjson.loads(data)
                        want_data, json_value = orjson.dumps(obj["data"]), True
                    else:
                        obj["data"] = data.decode()
                        want_data, json_value = data, False
                    headers = {"content-type": "application/cloudevents+json"}
                    body = orjson.dumps(obj)
                r = await http.post(
                    f"{h.http_a}/{h.tag}/http/c{n}",
                    data=body,
                    headers={**headers, **transport},
                    skip_auto_headers=("Content-Type",),  # none unless the case has one
                )
                assert r.status == 202, await r.text()
                expected[attrs["id"]] = (attrs, want_data, json_value)
        await h.wait_arrivals(len(cases))
        for arr in h.arrivals:
            if arr.form == "data":
                continue
            assert arr.event is not None, arr.form
            attrs, data, json_value = expected[arr.event.id]
            where = f"{arr.event.id} via {arr.form}"
            # A structured event without datacontenttype implies application/json;
            # re-encoded in a binary mode, that type is set explicitly (JSON format 3.1).
            got = strings(arr.event.attrs)
            got_ct = got.pop("datacontenttype", None)
            want = dict(attrs)
            want_ct = want.pop("datacontenttype", "application/json" if json_value else None)
            assert got == want, where
            assert got_ct in (want_ct, None) and arr.event.content_type == want_ct, where
            json_ct = (arr.event.content_type or "").startswith("application/json")
            if json_value or (json_ct and arr.form in STRUCTURED_OUT):
                # JSON data inside a JSON event is a JSON value: insignificant
                # whitespace (the YAML's final newline) is not part of it.
                assert orjson.loads(arr.event.data or b"") == orjson.loads(data), where
            else:
                assert arr.event.data == data, where
        datas = sorted(a.payload for a in h.arrivals if a.form == "data")
        assert datas == sorted(d for _, d, _ in expected.values())
