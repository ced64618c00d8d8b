"""The event catalog's pure parts: recording, patterns, examples, sharing, frames, export."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml

from mesh.core import frames
from mesh.core.catalog import (
    MAX_LIST,
    Catalog,
    overlaps,
    source_pattern,
    topic_pattern,
)
from mesh.core.envelope import Envelope
from mesh.core.event import Event
from mesh.core.eventcatalog import eventcatalog_files, safe_id
from mesh.core.routing import RouteInfo
from mesh.core.rules import TopicRules


def env(type_: str, topic: str, origin: str = "a", source: str = "/s", **attrs: Any) -> Envelope:
    a = {"specversion": "1.0", "id": "1", "source": source, "type": type_, **attrs}
    return Envelope(Event(a, b'{"x": 1, "password": "hunter2"}', json_implied=True), topic, origin)


def route(origin: str, pattern: str, filter: Any = None) -> RouteInfo:
    return RouteInfo(origin, pattern, filter, None, (origin,), 0.0, True)


def test_patterns_collapse_ids_but_keep_versions_and_names() -> None:
    assert source_pattern("/shop/devices/dev-3") == "/shop/devices/*"
    assert source_pattern("https://u:pw@x.example/api/v1/orders/42") == (
        "https://u:***@x.example/api/v1/orders/*"
    )
    assert topic_pattern("telemetry/shop/dev-3") == "telemetry/shop/+"
    assert topic_pattern("retail/order-requested") == "retail/order-requested"
    assert overlaps("telemetry/#", "telemetry/shop/+")
    assert overlaps("+/shop/dev-1", "telemetry/shop/+")
    assert not overlaps("retail/+", "telemetry/shop/+")
    assert not overlaps("a/b", "a/b/c")


def test_a_batch_is_recorded_per_type_with_bounded_patterns_and_a_clean_example() -> None:
    cat = Catalog("a")
    batch = [env("t.one", f"dev/{i}/x", source=f"/dev/{i}") for i in range(100)]
    batch.append(env("t.two", "b/c", origin="b", apikey="s3cret", traceparent="00-x"))
    assert cat.record(batch) == 0
    rows = {r["type"]: r for r in cat.own()}
    assert rows["t.one"]["count"] == 100
    assert rows["t.one"]["topics"] == ["dev/+/x"]
    assert rows["t.one"]["sources"] == ["/dev/*"]
    assert rows["t.two"]["producers"] == ["b"]
    example = rows["t.two"]["example"]
    assert "apikey" not in example["attributes"]
    assert example["attributes"]["traceparent"] == "00-x"
    assert "hunter2" not in example["data"] and '"password":"***"' in example["data"]
    # Distinct literal topics beyond the bound are not kept.
    for i in range(40):
        cat.record(
            [env("t.one", f"lit-{chr(97 + i % 26)}{i // 26}z/q{'abcdefghijklmnop'[i % 16]}")]
        )
    assert len({r["type"]: r for r in cat.own()}["t.one"]["topics"]) <= MAX_LIST


def test_types_beyond_the_bound_are_counted_not_recorded() -> None:
    cat = Catalog("a", max_types=2)
    assert cat.record([env("t1", "x"), env("t2", "x"), env("t3", "x"), env("t3", "y")]) == 2
    assert {r["type"] for r in cat.own()} == {"t1", "t2"}
    assert cat.dropped == 2


def test_the_view_computes_consumers_from_patterns_and_filters() -> None:
    cat = Catalog("a")
    cat.record([env("t.order", "retail/order"), env("t.tele", "telemetry/shop/d1")])
    routes = [
        route("a", "retail/+", {"exact": {"type": "t.other"}}),
        route("b", "retail/+", {"exact": {"type": "t.order"}}),
        route("c", "telemetry/#"),
    ]
    view = {m["type"]: m for m in cat.view(routes)}
    assert view["t.order"]["consumers"] == ["b"]
    assert view["t.tele"]["consumers"] == ["c"]
    assert view["t.order"]["producers"] == ["a"]
    assert view["t.order"]["reported_by"] == ["a"]


def _entry(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "type": "t.x",
        "sources": ["/s"],
        "topics": ["in/+"],
        "producers": ["b"],
        "count": 3,
        "rate": 0.5,
        "first_seen": 1.0,
        "last_seen": 2.0,
        "example": {"attributes": {"type": "t.x", "authtoken": "no"}, "data": "{}"},
        "path": ["b"],
    }
    e.update(over)
    return e


def _parse(entries: Any) -> frames.CatalogEntries:
    frame = frames.parse_control(orjson.dumps({"type": "catalog", "entries": entries}), "b")
    assert isinstance(frame, frames.CatalogEntries)
    return frame


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("not an entry", "malformed"),
        (_entry(type=""), "malformed"),
        (_entry(type="x" * 257), "malformed"),
        (_entry(sources=["/s"] * 17), "malformed"),
        (_entry(sources=[1]), "malformed"),
        (_entry(topics=["a/#/b"]), "malformed"),
        (_entry(producers=["Not An Id"]), "malformed"),
        (_entry(count=-1), "malformed"),
        (_entry(count="3"), "malformed"),
        (_entry(rate=float("inf")), "malformed"),
        (_entry(last_seen=None), "malformed"),
        (_entry(example={"attributes": {"type": "t"}, "extra": 1}), "malformed"),
        (_entry(example={"attributes": {"type": {"nested": 1}}}), "malformed"),
        (_entry(example={"data": "x" * 5000}), "malformed"),
        (_entry(path=["c"]), "path"),  # must end with the sender
        (_entry(path=["b", "c", "b"]), "path"),
        (_entry(path=[]), "path"),
    ],
)
def test_a_malformed_catalog_entry_is_refused_with_a_reason_and_the_rest_kept(
    bad: Any, code: str
) -> None:
    frame = _parse([bad, _entry(type="t.good")])
    assert [e.type for e in frame.entries] == ["t.good"]
    assert [c for c, _ in frame.refused] == [code]


def test_catalog_frames_are_bounded_and_secret_like_example_attributes_dropped() -> None:
    frame = _parse([_entry()])
    assert frame.entries[0].example == {"attributes": {"type": "t.x"}, "data": "{}"}
    assert _parse("nope").refused[0][0] == "malformed"
    many = _parse([_entry(type=f"t{i}") for i in range(1001)])
    assert len(many.entries) == 1000 and many.refused[0][0] == "limit"


def test_an_old_peer_ignores_it_and_unknown_frames_stay_unknown() -> None:
    # What a node without catalogs does with the frame: parse_control's Unknown.
    assert isinstance(frames.parse_control(b'{"type": "catalog2"}', "b"), frames.Unknown)


def test_sharing_respects_export_rules_and_never_echoes_or_loops() -> None:
    a = Catalog("a")
    a.record([env("t.public", "in/public/1"), env("t.private", "in/private/1")])
    rules = TopicRules.compile(["in/public/#"])
    shared = a.share("c", rules)
    assert [e["type"] for e in shared] == ["t.public"]
    assert shared[0]["path"] == ["a"]
    assert {e["type"] for e in a.share("d", None)} == {"t.public", "t.private"}
    assert shared[0]["example"] is not None and shared[0]["sources"]
    # One type on an exported topic and on another: the peer gets the exported topic
    # only, and neither the example nor the sources, which may come from the other.
    mixed = Catalog("a")
    mixed.record([env("t.mixed", "in/private/1"), env("t.mixed", "in/public/2")])
    [entry] = mixed.share("c", rules)
    assert entry["topics"] == ["in/public/+"]
    assert entry["example"] is None and entry["sources"] == []
    assert _parse_from("a", [entry]).entries  # and the peer takes it

    # b learns a's entries; it passes them on to c, never back to a.
    b = Catalog("b")
    b.learn("a", _parse_from("a", a.share("b", None)).entries)
    assert {e["type"] for e in b.share("c", None)} == {"t.public", "t.private"}
    assert all(e["path"] == ["a", "b"] for e in b.share("c", None))
    assert b.share("a", None) == []
    # An entry whose path runs through this node is ignored (a ring brings it back).
    a.learn(
        "c", _parse_from("c", [dict(e, path=["a", "b", "c"]) for e in b.share("c", None)]).entries
    )
    assert {m["reported_by"][0] for m in a.view([])} == {"a"}
    b.forget("a")
    assert b.view([]) == []


def _parse_from(peer: str, entries: list[dict[str, Any]]) -> frames.CatalogEntries:
    frame = frames.parse_control(orjson.dumps({"type": "catalog", "entries": entries}), peer)
    assert isinstance(frame, frames.CatalogEntries)
    assert not frame.refused, frame.refused
    return frame


def test_export_writes_eventcatalog_front_matter_and_schemas() -> None:
    cat = Catalog("a")
    cat.record([env("com.example.Order", "retail/order"), env("com.example.Other", "x/y")])
    data = {"node": "a", "events": cat.view([route("b", "retail/#")], {"com.example.O*": {}})}
    data["events"][0]["schema"] = {"type": "object"}
    files = eventcatalog_files(data)
    fm = front_matter(files["events/com.example.Order/index.mdx"])
    assert fm == {
        "id": "com.example.Order",
        "name": "Order",
        "version": "0.0.1",
        "summary": fm["summary"],
        "schemaPath": "schema.json",
    }
    assert orjson.loads(files["events/com.example.Order/schema.json"]) == {"type": "object"}
    svc = front_matter(files["services/a/index.mdx"])
    assert svc["sends"] == [
        {"id": "com.example.Order", "version": "0.0.1"},
        {"id": "com.example.Other", "version": "0.0.1"},
    ]
    assert front_matter(files["services/b/index.mdx"])["receives"] == [
        {"id": "com.example.Order", "version": "0.0.1"}
    ]
    assert safe_id("../../etc") == "..-..-etc"
    assert safe_id("..").startswith("event-")


def front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    head, _body = text[4:].split("\n---\n", 1)
    data = yaml.safe_load(head)
    assert isinstance(data, dict)
    return data


def test_what_a_node_shares_always_passes_the_peer_s_parser() -> None:
    cat = Catalog("a")
    long_name = "x" * 70
    cat.record(
        [
            env("t.odd", "a/b+c/#x", source="/" + "s" * 300),
            env("t.long", "t/" + "l" * 300, **{long_name: "v"}),
        ]
    )
    frame = _parse_from("a", cat.share("b", None))
    assert {e.type for e in frame.entries} == {"t.odd", "t.long"}
    odd = next(e for e in frame.entries if e.type == "t.odd")
    assert odd.topics == ["a/+/+"]
