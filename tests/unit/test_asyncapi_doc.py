"""The AsyncAPI document builder, without I/O: the demo's sites and a node with everything.

Each document is checked against the official AsyncAPI 3.0.0 schema, and every
``$ref`` in it must resolve inside it (tests/asyncapi_check.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mesh.config import MeshConfig, load_config, parse_config
from mesh.config.models import SchemaEntry
from mesh.core.asyncapi import BrokerDoc, _filter_types, build_document
from mesh.core.routing import RouteInfo
from mesh.core.schemas import Schemas
from mesh.plugins import load_specs
from tests.asyncapi_check import assert_valid, resolve, schema_errors

ROOT = Path(__file__).resolve().parents[2]


def brokers_of(config: MeshConfig) -> dict[str, BrokerDoc]:
    specs = load_specs()
    out = {}
    for name, cfg in config.brokers.items():
        describe = specs[cfg.kind].asyncapi
        assert describe is not None, cfg.kind
        out[name] = describe(cfg)
    return out


def document(config: MeshConfig, routes: Sequence[RouteInfo] = (), **kw: Any) -> dict[str, Any]:
    return build_document(
        config, routes, brokers=brokers_of(config), listen=config.node.listen, **kw
    )


@pytest.mark.parametrize("site", ["shop", "core", "warehouse"])
def test_each_demo_site_has_a_valid_document(site: str) -> None:
    config = load_config(ROOT / "config" / f"{site}.yaml", env={}, overrides={})
    doc = document(config)
    assert_valid(doc)
    receives = [o for o in doc["operations"].values() if o["action"] == "receive"]
    sends = [o for o in doc["operations"].values() if o["action"] == "send"]
    assert (len(receives), len(sends)) == (len(config.ingress), len(config.egress))
    assert set(doc["servers"]) >= {"mesh", *config.brokers}


def test_the_schema_check_refuses_what_the_official_schema_refuses() -> None:
    config = load_config(ROOT / "config" / "shop.yaml", env={}, overrides={})
    doc = document(config)
    op = next(o for o in doc["operations"].values() if o["action"] == "send")
    op["bindings"]["mqtt"]["queue"] = "no such field in the MQTT binding"
    assert schema_errors(doc)
    doc = document(config)
    doc["channels"]["plant.in.0"]["messages"]["CloudEvent"]["$ref"] = "#/components/messages/x"
    with pytest.raises(AssertionError, match="no 'x'"):
        assert_valid(doc)


ITEM = {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}
ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {"item": ITEM},
}


def rich_config() -> MeshConfig:
    data = {
        "node": {"id": "edge", "region": "eu", "listen": "127.0.0.1:7499"},
        "brokers": {
            "plant": {
                "kind": "mqtt",
                "url": "mqtts://meshuser:mqtt-pass-123@broker.example:8883",
                "protocol": "3.1.1",
            },
            "bus": {"kind": "nats", "url": "nats://nats.example:4222", "token": "nats-tok-456"},
            "web": {"kind": "http", "headers": {"X-Secret": "hdr-secret-789"}},
        },
        "ingress": [
            {
                "from": "bus",
                "topic": "orders.*.>",
                "mesh_topic": "orders/{1}/{2}",
                "queue_group": "workers",
            },
            {
                "from": "plant",
                "topic": "sensors/+/temp",
                "event": {"type": "com.example.sensor.temp", "source": "/s/{1}"},
                "qos": 0,
            },
        ],
        "egress": [
            {
                "name": "eu-orders",
                "to": "plant",
                "topic": "orders/#",
                "filter": {
                    "all": [
                        {"prefix": {"type": "com.example.order."}},
                        {"sql": "subject LIKE 'eu-%'"},
                    ]
                },
                "target": "out/{1}",
                "qos": 0,
                "retain": True,
                "mode": "structured",
            },
            {
                "to": "web",
                "topic": "orders/+/created",
                "filter": {"exact": {"type": "com.example.order.created"}},
                "target": "https://hook:hook-pass-000@hooks.example:8443/in/{data.id}?n={node}",
                "on_error": {"retry": {"max_attempts": 3}, "then": "pause"},
            },
        ],
    }
    return parse_config(data, "<edge>", env={}, overrides={})


def route(origin: str, pattern: str, filt: Any, path: tuple[str, ...]) -> RouteInfo:
    return RouteInfo(origin, pattern, filt, path[-1], path, 1.0, True)


def test_a_node_with_every_feature_has_a_valid_and_complete_document() -> None:
    config = rich_config()
    created = {"exact": {"type": "com.example.order.created"}}
    routes = [
        route("edge", "orders/#", None, ("edge",)),  # local: shown as egress, not again
        route("far", "orders/+/created", created, ("far", "mid")),
        route("mid", "audit/#", {"sql": "type = 'x'"}, ("mid",)),
    ]
    schemas = {"com.example.order.created": ORDER_SCHEMA, "com.example.order.*": {"type": "object"}}
    doc = document(config, routes, schemas=schemas, seen_types=["com.example.seen"])
    assert_valid(doc)
    text = json.dumps(doc)
    for secret in ("mqtt-pass-123", "nats-tok-456", "hdr-secret-789", "hook-pass-000"):
        assert secret not in text, secret

    servers = doc["servers"]
    assert servers["plant"] == {
        "host": "broker.example:8883",
        "protocol": "secure-mqtt",
        "title": "broker plant",
        "protocolVersion": "3.1.1",
    }
    assert servers["bus"]["host"] == "nats.example:4222" and servers["bus"]["protocol"] == "nats"
    assert (servers["web"]["host"], servers["web"]["protocol"]) == ("127.0.0.1:7499", "http")
    assert servers["mesh"] == {**servers["mesh"], "protocol": "ws", "pathname": "/mesh"}
    [hooks] = [s for s in servers.values() if s["host"] == "hooks.example:8443"]
    assert hooks["protocol"] == "https"

    ops = doc["operations"]
    channels = doc["channels"]
    # NATS ingress: wildcards as parameters, the queue group as the NATS operation binding.
    nats_in = ops["receive.bus.0"]
    assert nats_in["bindings"] == {"nats": {"queue": "workers", "bindingVersion": "0.1.0"}}
    ch = resolve(doc, nats_in["channel"]["$ref"])
    assert ch["address"] == "orders.{1}.{2}" and set(ch["parameters"]) == {"1", "2"}
    assert ">" in ch["parameters"]["2"]["description"]
    # MQTT ingress with a literal type template: that type, and any CloudEvent as it came.
    mqtt_in = ops["receive.plant.1"]
    assert mqtt_in["bindings"] == {"mqtt": {"qos": 0, "bindingVersion": "0.2.0"}}
    assert {m["$ref"].rsplit("/", 1)[1] for m in mqtt_in["messages"]} == {
        "com.example.sensor.temp",
        "CloudEvent",
    }
    # MQTT egress: qos and retain; the filter and its CESQL as extensions; a prefix type.
    out = ops["send.eu-orders"]
    assert out["bindings"] == {"mqtt": {"qos": 0, "retain": True, "bindingVersion": "0.2.0"}}
    assert out["x-cesql-filter"] == "subject LIKE 'eu-%'"
    assert out["x-filter"] == config.egress[0].filter
    assert out["x-dlq"]["then"] == "dead-letter"
    [msg] = out["messages"]  # a prefix type, in structured mode: the event is the payload
    prefix = resolve(doc, resolve(doc, msg["$ref"])["$ref"])
    assert prefix["title"] == "com.example.order.* (structured)" and "headers" not in prefix
    assert prefix["contentType"] == "application/cloudevents+json"
    context, data = prefix["payload"]["allOf"]
    assert resolve(doc, context["allOf"][0]["$ref"])["required"] == [
        "specversion",
        "id",
        "source",
        "type",
    ]
    assert context["allOf"][1]["properties"]["type"]["pattern"] == r"^com\.example\.order\."
    assert resolve(doc, data["properties"]["data"]["$ref"]) == {"type": "object"}
    # Webhook egress: the URL's host is a server, its path the address, fields parameters.
    hook = ops["send.web_1"]
    assert hook["bindings"] == {"http": {"method": "POST", "bindingVersion": "0.3.0"}}
    assert hook["x-dlq"] == {
        "then": "pause",
        "retry": {"max_attempts": 3, "max_age": 0.0, "backoff": {"initial": 0.2, "max": 30.0}},
    }
    ch = resolve(doc, hook["channel"]["$ref"])
    assert ch["address"] == "/in/{data_id}?n={node}"
    assert set(ch["parameters"]) == {"data_id", "node"}
    assert resolve(doc, ch["servers"][0]["$ref"]) is hooks
    # The schema of a type is its message's payload; its own $refs point into the document.
    created = doc["components"]["messages"]["com.example.order.created"]
    payload = resolve(doc, created["payload"]["$ref"])
    assert resolve(doc, payload["properties"]["items"]["items"]["$ref"]) == ITEM
    assert created["headers"]["allOf"][1]["properties"]["type"]["const"] == created["name"]
    # Remote interests: events from here reach them, through the next hop.
    remote = [o for o in ops.values() if "x-origin" in o]
    assert sorted((o["x-origin"], o["x-next-hop"]) for o in remote) == [
        ("far", "mid"),
        ("mid", "mid"),
    ]
    [far] = [o for o in remote if o["x-origin"] == "far"]
    assert far["action"] == "send" and far["x-path"] == ["far", "mid"]
    assert resolve(doc, far["channel"]["$ref"])["address"] == "orders/{1}/created"
    [mid] = [o for o in remote if o["x-origin"] == "mid"]
    assert mid["x-cesql-filter"] == "type = 'x'"
    assert all(resolve(doc, c["servers"][0]["$ref"]) is servers["mesh"] for c in (
        resolve(doc, o["channel"]["$ref"]) for o in remote
    ))  # fmt: skip
    # A type seen (fed by a catalog) is listed too.
    assert "com.example.seen" in doc["components"]["messages"]
    assert len(channels) == len(ops) == 6


def test_the_documents_of_the_configured_schemas_are_what_the_document_shows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER_SCHEMA), encoding="utf-8")
    entries = [
        SchemaEntry.model_validate({"type": "com.example.a", "inline": {"type": "string"}}),
        SchemaEntry.model_validate({"type": "com.example.order.*", "schema": str(path)}),
        SchemaEntry.model_validate({"type": "com.example.a", "inline": {"type": "number"}}),
    ]
    assert Schemas.compile(entries).documents() == {
        "com.example.a": {"type": "string"},  # the first entry of a type wins
        "com.example.order.*": ORDER_SCHEMA,
    }
    assert Schemas.compile([]).documents() == {}


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"exact": {"type": "a.b"}}, [("a.b", False)]),
        ({"prefix": {"type": "a."}}, [("a.", True)]),
        (
            {"any": [{"exact": {"type": "a"}}, {"exact": {"type": "b"}}]},
            [("a", False), ("b", False)],
        ),
        ({"any": [{"exact": {"type": "a"}}, {"sql": "true"}]}, []),  # any type gets through
        ({"all": [{"prefix": {"type": "a."}}, {"exact": {"type": "a.b"}}]}, [("a.b", False)]),
        ([{"prefix": {"type": "a."}}, {"prefix": {"type": "a.b."}}], [("a.b.", True)]),
        ({"all": [{"exact": {"type": "a"}}, {"exact": {"subject": "x"}}]}, [("a", False)]),
        ({"not": {"exact": {"type": "a"}}}, []),
        ({"exact": {"source": "/s"}}, []),
    ],
)
def test_the_types_a_filter_admits(spec: Any, types: list[tuple[str, bool]]) -> None:
    assert _filter_types(spec) == types


def test_data_mode_messages_have_no_attributes() -> None:
    config = rich_config()
    config.egress[0].mode = "data"
    doc = document(config, schemas={"com.example.order.*": {"type": "object"}})
    assert_valid(doc)
    [msg] = doc["operations"]["send.eu-orders"]["messages"]
    data = resolve(doc, resolve(doc, msg["$ref"])["$ref"])
    assert data["title"].endswith("(data only)") and "headers" not in data
    assert resolve(doc, data["payload"]["$ref"]) == {"type": "object"}
