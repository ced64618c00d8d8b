"""JSON Schemas by CloudEvent type (mesh.core.schemas): reasons that name the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mesh.config import SchemaEntry, parse_config
from mesh.core.errors import ConfigError, ConfigErrors, SchemaViolation
from mesh.core.event import Event
from mesh.core.schemas import Schemas, format_path

ORDER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/schemas/order.json",
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}},
            },
        },
    },
}


def order(items: list[dict[str, Any]], **attrs: Any) -> Event:
    data = orjson.dumps({"id": "o-1", "items": items})
    attrs.setdefault("datacontenttype", "application/json")
    return Event.create(attrs.pop("type", "com.example.order.requested"), "/shop", data, **attrs)


def schemas(*entries: dict[str, Any]) -> Schemas:
    return Schemas.compile([SchemaEntry.model_validate(e) for e in entries])


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), "data"),
        (("items", 2, "qty"), "data.items[2].qty"),
        ((0,), "data[0]"),
        (("a b", "x"), 'data["a b"].x'),
        (("1st",), 'data["1st"]'),
        (("é",), 'data["é"]'),
    ],
)
def test_paths_read_like_the_data(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_an_invalid_event_names_the_failing_path() -> None:
    s = schemas({"type": "com.example.order.requested", "inline": ORDER})
    ok = order([{"qty": 1}])
    assert s.check(ok, "ingress") is None
    bad = order([{"qty": 1}, {"qty": 2}, {"qty": -1}])
    reason = s.check(bad, "ingress")
    assert reason == (
        "data.items[2].qty: -1 is less than the minimum of 1 (schema schemas[0].inline)"
    )
    with pytest.raises(SchemaViolation) as exc:
        s.enforce(bad, "ingress")
    assert exc.value.reason == reason
    # The point matters: this schema is not checked at egress.
    assert s.check(bad, "egress") is None


def test_types_match_exactly_or_by_prefix() -> None:
    s = schemas({"type": "com.example.order.*", "inline": ORDER})
    assert s.check(order([{"qty": 0}]), "ingress") is not None
    assert s.check(order([{"qty": 0}], type="com.example.orders"), "ingress") is None
    exact = schemas({"type": "com.example.order", "inline": ORDER})
    assert exact.check(order([{"qty": 0}], type="com.example.order.x"), "ingress") is None


def test_dataschema_names_a_schema_by_id_or_file(tmp_path: Path) -> None:
    f = tmp_path / "order.json"
    f.write_bytes(orjson.dumps({k: v for k, v in ORDER.items() if k != "$id"}))
    s = schemas(
        {"type": "never.this", "inline": ORDER},
        {"type": "nor.this", "schema": str(f)},
    )
    bad = [{"qty": 0}]
    assert s.check(order(bad), "ingress") is None
    by_id = order(bad, dataschema="https://example.com/schemas/order.json")
    assert "(schema schemas[0].inline)" in (s.check(by_id, "ingress") or "")
    for name in (str(f), f.as_uri()):
        reason = s.check(order(bad, dataschema=name), "ingress")
        assert reason is not None and reason.startswith("data.items[0].qty: 0 is less")
        assert f"(schema {f})" in reason


def test_data_that_is_not_json_is_refused_where_a_schema_applies() -> None:
    s = schemas({"type": "t", "inline": {"type": "object"}})
    text = Event.create("t", "/s", b"hello", datacontenttype="text/plain")
    assert s.check(text, "ingress") == (
        "data is not JSON (datacontenttype text/plain) but schema schemas[0].inline "
        "applies to type t"
    )
    broken = Event.create("t", "/s", b"{nope", datacontenttype="application/json")
    assert (s.check(broken, "ingress") or "").startswith("data is not valid JSON")
    # Without a datacontenttype, JSON data is read as JSON.
    assert s.check(Event.create("t", "/s", b"[1]"), "ingress") == (
        'data: [1] is not of type "object" (schema schemas[0].inline)'
    )
    # No data is null.
    assert s.check(Event.create("t", "/s"), "ingress") is not None


def test_draft_07_schemas_work_too() -> None:
    s = schemas(
        {
            "type": "t",
            "inline": {"$schema": "http://json-schema.org/draft-07/schema#", "maxLength": 2},
        }
    )
    ev = Event.create("t", "/s", b'"abc"', datacontenttype="application/json")
    assert (
        s.check(ev, "ingress")
        == 'data: "abc" is longer than 2 characters (schema schemas[0].inline)'
    )


def test_long_messages_are_cut() -> None:
    s = schemas({"type": "t", "inline": {"type": "string"}})
    ev = Event.create(
        "t", "/s", orjson.dumps({"k": "x" * 5000}), datacontenttype="application/json"
    )
    reason = s.check(ev, "ingress") or ""
    assert len(reason) < 400 and "…" in reason


BASE: dict[str, Any] = {"node": {"id": "a"}, "brokers": {"m": {"kind": "memory"}}}


def errors_of(**extra: Any) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        parse_config({**BASE, **extra}, env={}, overrides={})
    return [str(e) for e in exc.value.errors]


def test_schema_problems_are_config_errors_naming_the_entry(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    found = errors_of(
        schemas=[
            {"type": "ok", "inline": {"type": "object"}},
            {"type": "a", "schema": str(tmp_path / "missing.json")},
            {"type": "b", "schema": str(bad_json)},
            {"type": "c", "inline": {"type": "bogus"}},
            {"type": "d"},
            {"type": "e*f", "inline": {}},
        ]
    )

    def one(prefix: str) -> str:
        (line,) = (e for e in found if e.startswith(prefix))
        return line

    assert "No such file" in one("schemas[1].schema: cannot read ")
    one(f"schemas[2].schema: {bad_json} is not JSON")
    one("schemas[3].inline: not a valid JSON Schema: ")
    assert "exactly one of schema" in one("schemas[4]: ")
    assert "may only end" in one("schemas[5].type: ")
    assert len(found) == 5


def test_compile_raises_the_entry_error() -> None:
    with pytest.raises(ConfigError) as exc:
        Schemas.compile([SchemaEntry.model_validate({"type": "t", "inline": {"minimum": "x"}})])
    assert exc.value.path == "schemas[0].inline"


def test_refs_follow_files_but_never_the_network(tmp_path: Path) -> None:
    (tmp_path / "qty.json").write_text('{"type": "integer", "minimum": 1}')
    main = tmp_path / "order.json"
    main.write_text('{"properties": {"qty": {"$ref": "qty.json"}}}')
    s = schemas({"type": "t", "schema": str(main)})
    ev = Event.create("t", "/s", b'{"qty": 0}', datacontenttype="application/json")
    assert (s.check(ev, "ingress") or "").startswith("data.qty: 0 is less than the minimum of 1")
    remote = {"type": "t", "inline": {"$ref": "https://example.com/order.json"}}
    with pytest.raises(ConfigError, match="only file references are followed"):
        schemas(remote)
