"""Egress transforms (mesh.core.transform) and the egress rule that applies them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridges.http import HttpBinding
from mesh.config import EgressRule as EgressConfig
from mesh.config import SchemaEntry, TransformSettings, parse_config
from mesh.core.egress import EgressRule
from mesh.core.envelope import Envelope
from mesh.core.errors import ConfigError, ConfigErrors, SchemaViolation, TransformError
from mesh.core.event import Event
from mesh.core.schemas import Schemas
from mesh.core.templates import RenderContext
from mesh.core.transform import Transform, event_document

SUMMARY = '{"order": data.id, "total": $sum(data.items.(qty * price))}'
ORDER = {"id": "o-7", "items": [{"qty": 2, "price": 1.5}, {"qty": 1, "price": 4}]}


def order(**attrs: Any) -> Event:
    attrs.setdefault("datacontenttype", "application/json")
    attrs.setdefault("dataschema", "https://example.com/order.json")
    return Event.create(
        "com.example.order.requested", "/shop", orjson.dumps(ORDER), subject="s1", **attrs
    )


def transform(**cfg: Any) -> Transform:
    return Transform("core:0", TransformSettings.model_validate(cfg), max_capture=2)


def apply(t: Transform, ev: Event) -> Event:
    return t.apply(ev, RenderContext(captures=("eu", "x"), attrs=ev.attrs, payload=ev.data))


def test_the_expression_reads_attributes_and_data() -> None:
    ev = order()
    out = apply(transform(jsonata=SUMMARY, attributes={"type": "com.example.order.summary"}), ev)
    assert orjson.loads(out.data or b"") == {"order": "o-7", "total": 7}
    assert out.attrs["type"] == "com.example.order.summary"
    assert out.attrs["datacontenttype"] == "application/json"
    assert "dataschema" not in out.attrs  # it described the old data
    assert out.attrs["id"] == ev.attrs["id"] and out.attrs["subject"] == "s1"
    assert ev.attrs["type"] == "com.example.order.requested"  # the input is untouched
    both = apply(transform(jsonata='{"t": type, "s": subject, "n": $count(data.items)}'), ev)
    assert orjson.loads(both.data or b"") == {
        "t": "com.example.order.requested",
        "s": "s1",
        "n": 2,
    }


def test_attributes_alone_keep_the_data_and_render_templates() -> None:
    ev = order()
    out = apply(transform(attributes={"subject": "{1}-{data.id}", "region": "{type}"}), ev)
    assert out.data == ev.data and out.attrs["dataschema"] == ev.attrs["dataschema"]
    assert out.attrs["subject"] == "eu-o-7"
    assert out.attrs["region"] == "com.example.order.requested"


def test_text_and_bytes_reach_the_expression() -> None:
    text = Event.create("t", "/s", b"hi", datacontenttype="text/plain")
    assert event_document(text)["data"] == "hi"
    raw = Event.create("t", "/s", b"\xff\x00", datacontenttype="application/octet-stream")
    assert event_document(raw)["data_base64"] == "/wA="
    assert "data" not in event_document(Event.create("t", "/s"))


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ('$error("boom")', "D3137: boom"),
        ("data.id + 1", "T2001: The left side of the + operator must evaluate to a number"),
        ("nothing.here", "the expression produced no value (undefined)"),
        ("$sum", "the result is not JSON"),
    ],
)
def test_a_failing_expression_names_its_error(expression: str, reason: str) -> None:
    with pytest.raises(TransformError) as exc:
        apply(transform(jsonata=expression), order())
    assert exc.value.reason.startswith(f"transform of egress core:0 failed: {reason}")


def test_null_is_a_value() -> None:
    assert apply(transform(jsonata="null"), order()).data == b"null"


def test_an_attribute_that_does_not_render_fails_the_event() -> None:
    with pytest.raises(TransformError, match="event has no attribute 'missing'"):
        apply(transform(attributes={"x": "{missing}"}), order())
    with pytest.raises(TransformError, match="must not be empty"):
        apply(transform(attributes={"subject": ""}), order())


def test_invalid_expressions_and_attributes_are_config_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        transform(jsonata='{"a": ')
    assert exc.value.path == "transform.jsonata"
    assert "invalid JSONata: S0203" in exc.value.message
    base: dict[str, Any] = {"node": {"id": "a"}, "brokers": {"m": {"kind": "memory"}}}
    rule = {"to": "m", "topic": "+/orders/#", "target": "x"}
    cases = {
        '{"a": ': "egress[0].transform.jsonata: invalid JSONata: S0203",
    }
    for expression, error in cases.items():
        cfg = {**base, "egress": [{**rule, "transform": {"jsonata": expression}}]}
        with pytest.raises(ConfigErrors) as errs:
            parse_config(cfg, env={}, overrides={})
        assert str(errs.value.errors[0]).startswith(error)
    for attrs, error in [
        ({"type": "{3}"}, "egress[0].transform.attributes.type: {3} refers to wildcard 3"),
        ({"specversion": "2"}, "egress[0].transform.attributes: 'specversion' cannot be set"),
        ({"Bad": "x"}, "egress[0].transform.attributes: 'Bad' is not"),
    ]:
        cfg = {**base, "egress": [{**rule, "transform": {"attributes": attrs}}]}
        with pytest.raises(ConfigErrors) as errs:
            parse_config(cfg, env={}, overrides={})
        assert str(errs.value.errors[0]).startswith(error), errs.value
    cfg = {**base, "egress": [{**rule, "transform": {}}]}
    with pytest.raises(ConfigErrors, match="needs jsonata, attributes or both"):
        parse_config(cfg, env={}, overrides={})


def rule(**cfg: Any) -> EgressRule:
    cfg = {"to": "h", "topic": "+/orders/#", "target": "orders.{type}", **cfg}
    return EgressRule(0, EgressConfig.model_validate(cfg), binding=HttpBinding())


def test_the_egress_rule_transforms_before_it_encodes() -> None:
    r = rule(transform={"jsonata": SUMMARY, "attributes": {"type": "com.example.order.summary"}})
    msg = r.encode(Envelope(order(), "eu/orders/new", "a"))
    assert orjson.loads(msg.payload) == {"order": "o-7", "total": 7}
    assert msg.topic == "orders.com.example.order.summary"  # from the event as it leaves
    headers = {k.lower(): v for k, v in msg.headers.items()}
    assert headers["ce-type"] == "com.example.order.summary"
    assert headers["content-type"] == "application/json"


def test_egress_schemas_check_the_event_as_it_leaves() -> None:
    summary = {"type": "object", "required": ["total"], "properties": {"total": {"minimum": 8}}}
    s = Schemas.compile(
        [
            SchemaEntry.model_validate(
                {"type": "com.example.order.summary", "inline": summary, "at": "egress"}
            )
        ]
    )
    r = rule(transform={"jsonata": SUMMARY, "attributes": {"type": "com.example.order.summary"}})
    env = Envelope(order(), "eu/orders/new", "a")
    with pytest.raises(SchemaViolation, match=r"^data.total: 7 is less than the minimum of 8"):
        r.encode(env, s)
    assert rule().encode(env, s).topic == "orders.com.example.order.requested"
