"""Topic patterns, MQTT <-> NATS translation, and templates."""

from __future__ import annotations

import pytest

from bridges.mqtt import MQTT_SYNTAX
from bridges.nats import NATS_SYNTAX
from mesh.core.errors import TemplateError
from mesh.core.templates import RenderContext, Template, literal_text
from mesh.core.topics import Pattern, TopicError


@pytest.mark.parametrize(
    ("pattern", "topic", "captures"),
    [
        ("a/b", "a/b", ()),
        ("a/+/c", "a/x/c", ("x",)),
        ("a/+/c", "a/x/y", None),
        ("a/#", "a", ("",)),  # MQTT: '#' also matches the parent level
        ("a/#", "a/b/c", ("b/c",)),
        ("+/+", "a/b", ("a", "b")),
        ("+", "a/b", None),
        ("#", "a/b", ("a/b",)),
        ("a/+/#", "a/b", ("b", "")),
        ("a/b", "a/b/c", None),
    ],
)
def test_pattern_match(pattern: str, topic: str, captures: tuple[str, ...] | None) -> None:
    assert Pattern.compile(pattern).match(tuple(topic.split("/"))) == captures


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b+", "a/#x"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(TopicError):
        Pattern.compile(bad)


def test_translation_between_mqtt_and_nats() -> None:
    nats = NATS_SYNTAX
    assert nats.to_mesh("sensors.*.temperature") == "sensors/+/temperature"
    assert nats.to_mesh("a.>") == "a/#"
    assert nats.from_mesh("a/+/b/#") == "a.*.b.>"
    assert nats.from_mesh(nats.to_mesh("x.*.y.>")) == "x.*.y.>"
    with pytest.raises(TopicError):
        nats.to_mesh("a.>.b")
    with pytest.raises(TopicError):
        nats.from_mesh("a.b/c")  # a '.' inside a level cannot become a NATS token
    with pytest.raises(TopicError, match="use \\* and >, not \\+"):
        nats.to_mesh("a.+.b")  # the reader would take it for an MQTT wildcard
    with pytest.raises(TopicError, match="use \\+ and #, not >"):
        MQTT_SYNTAX.to_mesh("a/>")
    assert nats.split("a.b.c") == ("a", "b", "c")
    assert nats.mesh_topic("a.b.c") == "a/b/c"
    assert MQTT_SYNTAX.split("a/b/c") == ("a", "b", "c")


def test_covers() -> None:
    assert Pattern.compile("a/#").covers(Pattern.compile("a/+/c"))
    assert Pattern.compile("+/b").covers(Pattern.compile("a/b"))
    assert not Pattern.compile("a/b").covers(Pattern.compile("a/+"))


def test_templates_render_captures_attributes_node_and_data() -> None:
    t = Template("telemetry.{node}.{subject}.{1}.{data.sensor.id}", max_capture=1)
    ctx = RenderContext(
        captures=("x/y",),
        node="site-a",
        attrs={"subject": "t1"},
        payload=b'{"sensor": {"id": 7}}',
        separator=".",
    )
    assert t.render(ctx) == "telemetry.site-a.t1.x.y.7"
    assert Template("{{literal}}").render(RenderContext()) == "{literal}"
    assert Template("plain").constant == "plain"
    assert Template("{flag}").render(RenderContext(attrs={"flag": True})) == "true"


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("a/{2}", {"max_capture": 1}, "refers to wildcard 2 but the pattern has 1"),
        ("a/{1", {}, "unclosed"),
        ("a}", {}, "unmatched"),
        ("{Type}", {}, "invalid variable"),
        ("{type}", {"attributes": False}, "unknown variable {type}"),
        ("{data}", {}, "use {data.<field>}"),
    ],
)
def test_template_errors_at_compile_time(
    source: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Template(source, **kwargs)  # type: ignore[arg-type]


def test_template_missing_values_at_render_time() -> None:
    with pytest.raises(TemplateError, match="event has no attribute 'subject'"):
        Template("x.{subject}").render(RenderContext(attrs={}))
    with pytest.raises(TemplateError, match=r"payload has no JSON field 'a\.b'"):
        Template("x.{data.a.b}").render(RenderContext(payload=b'{"a": {}}'))
    with pytest.raises(TemplateError, match="payload has no JSON field"):
        Template("x.{data.a}").render(RenderContext(payload=b"not json"))


@pytest.mark.parametrize(
    ("source", "literal"),
    [("a/{1}/b", "a/x/b"), ("out.{node}.{id}", "out.x.x"), ("a{{+}}/#", "a{+}/#"), ("", "")],
)
def test_literal_text_is_a_template_without_its_variables(source: str, literal: str) -> None:
    assert literal_text(source) == literal
