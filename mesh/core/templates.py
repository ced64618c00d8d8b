"""Templates for mesh topics, targets and attributes, compiled once.

Syntax: literal text with ``{variable}`` placeholders; ``{{`` and ``}}`` are
literal braces. Variables:

- ``{1}`` … ``{n}``: the captures of the rule's pattern wildcards, in order;
- ``{node}``: the origin node id; ``{topic}``: the topic being matched;
- ``{data.path}``: a field of a JSON payload (``data.a.b``, ``data.items.0``);
- any other name: a CloudEvent context attribute (``{type}``, ``{subject}``,
  extensions), where the template's *scope* allows attributes.

Rendering is a pure function of a :class:`RenderContext`. A variable with no
value raises :class:`~mesh.core.errors.TemplateError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.core.errors import TemplateError

__all__ = ["RenderContext", "Template", "literal_text"]

_VAR = re.compile(r"[0-9]+|[a-z0-9]+|data(\.[A-Za-z0-9_\-]+)+")
_MISSING = object()


@dataclass(slots=True)
class RenderContext:
    """Everything a template may read. ``payload`` is parsed lazily for ``{data.*}``."""

    captures: tuple[str, ...] = ()
    node: str = ""
    topic: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    payload: bytes | None = None
    separator: str = "/"
    _json: Any = _MISSING

    def data_field(self, path: tuple[str, ...]) -> Any:
        if self._json is _MISSING:
            try:
                self._json = orjson.loads(self.payload) if self.payload else None
            except orjson.JSONDecodeError:
                self._json = None
        value = self._json
        for part in path:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return _MISSING
        return value


_Part = Callable[[RenderContext], str]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


class Template:
    """A compiled template. ``variables`` lists the names it uses."""

    __slots__ = ("_parts", "constant", "source", "variables")

    def __init__(self, source: str, *, max_capture: int | None = None, attributes: bool = True):
        """Compile ``source``.

        ``max_capture`` bounds ``{n}`` (the pattern's wildcard count; None: no
        captures allowed). ``attributes`` says whether event attributes may
        be referenced (not in ingress templates, which build the event).
        """
        self.source = source
        parts: list[_Part | str] = []
        variables: list[str] = []
        i = 0
        buf: list[str] = []
        n = len(source)
        while i < n:
            c = source[i]
            if c == "{":
                if source.startswith("{{", i):
                    buf.append("{")
                    i += 2
                    continue
                end = source.find("}", i)
                if end < 0:
                    raise TemplateError(source, f"unclosed '{{' at position {i}")
                name = source[i + 1 : end].strip()
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(self._compile_var(name, max_capture, attributes))
                variables.append(name)
                i = end + 1
            elif c == "}":
                if source.startswith("}}", i):
                    buf.append("}")
                    i += 2
                    continue
                raise TemplateError(source, f"unmatched '}}' at position {i}")
            else:
                buf.append(c)
                i += 1
        if buf:
            parts.append("".join(buf))
        self._parts = tuple(parts)
        self.variables = tuple(variables)
        self.constant = "".join(p for p in parts if isinstance(p, str)) if not variables else None

    def _compile_var(self, name: str, max_capture: int | None, attributes: bool) -> _Part:
        src = self.source
        if not _VAR.fullmatch(name):
            raise TemplateError(src, f"invalid variable {{{name}}}")
        if name == "data":
            raise TemplateError(src, "{data} is not a variable; use {data.<field>}")
        if name.isdigit():
            idx = int(name)
            limit = max_capture or 0
            if idx < 1 or idx > limit:
                raise TemplateError(
                    src,
                    f"{{{name}}} refers to wildcard {idx} but the pattern has {limit}",
                )

            def capture(ctx: RenderContext, i: int = idx - 1) -> str:
                value = ctx.captures[i]
                return value.replace("/", ctx.separator) if ctx.separator != "/" else value

            return capture
        if name == "node":
            return lambda ctx: ctx.node
        if name == "topic":
            return lambda ctx: ctx.topic
        if name.startswith("data."):
            path = tuple(name.split(".")[1:])

            def data(ctx: RenderContext) -> str:
                value = ctx.data_field(path)
                if value is _MISSING or value is None:
                    raise TemplateError(src, f"payload has no JSON field '{name[5:]}'")
                return _text(value)

            return data
        if not attributes:
            raise TemplateError(
                src,
                f"unknown variable {{{name}}}; here you can use {{1}}..{{n}}, {{node}}, "
                "{topic} and {data.<field>}",
            )

        def attribute(ctx: RenderContext) -> str:
            value = ctx.attrs.get(name)
            if value is None:
                raise TemplateError(src, f"event has no attribute '{name}'")
            return _text(value)

        return attribute

    def render(self, ctx: RenderContext) -> str:
        if self.constant is not None:
            return self.constant
        return "".join(p if isinstance(p, str) else p(ctx) for p in self._parts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


_VARIABLE = re.compile(r"\{\{|\}\}|\{[^}]*\}")


def literal_text(source: str) -> str:
    """The fixed text of a template: what is left without its ``{…}`` variables.

    Bridges check it for characters their protocol forbids in a publish
    topic (``+``/``#`` in MQTT, ``*``/``>`` in NATS) before a node starts.
    """
    return _VARIABLE.sub(lambda m: m[0][0] if m[0] in ("{{", "}}") else "x", source)
