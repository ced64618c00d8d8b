"""Egress transforms: new data (JSONata) and attributes (templates) for an event (pure).

An egress rule's ``transform`` is compiled once (:class:`Transform`) when the
rule is. :meth:`Transform.apply` runs before the binding encodes the event:

- ``jsonata``: the expression's input is the event as one JSON object, its
  context attributes at the top level and its data under ``data`` (parsed
  JSON; text as a string; other bytes as ``data_base64``). Its result,
  serialised as JSON, becomes the event's data, with ``datacontenttype``
  ``application/json``; the old ``dataschema`` no longer describes it and is
  dropped unless ``attributes`` sets one.
- ``attributes``: templates, as in ``target`` (``{1}``, ``{topic}``,
  ``{type}``, ``{data.x}`` of the event as it arrived), set after the data.

A failure on one event (the expression raised, produced no value or not
JSON, an attribute does not render or is invalid) raises
:class:`~mesh.core.errors.TransformError` with the expression's error; the
egress worker dead-letters that event, since retrying cannot help.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import jsonata
import orjson
from jsonata.utils import Utils

from mesh.core.errors import ConfigError, EventError, TemplateError, TransformError
from mesh.core.event import JSON_MEDIA_TYPE, AttrValue, Event, is_json_media_type
from mesh.core.event import validate_attributes as _validate_attributes
from mesh.core.templates import RenderContext, Template

if TYPE_CHECKING:
    from mesh.config import TransformSettings

__all__ = ["MAX_DEPTH", "Transform", "compile_jsonata", "event_document"]

MAX_DEPTH = 200  # JSONata evaluation depth: a runaway recursion fails that event only


def compile_jsonata(source: str) -> Any:
    """Compile an expression once; ConfigError (path ``transform.jsonata``) if it is invalid."""
    try:
        expr = jsonata.Jsonata(source, stack=MAX_DEPTH)
    except jsonata.JException as exc:
        raise ConfigError("transform.jsonata", f"invalid JSONata: {_jsonata_reason(exc)}") from None
    except Exception as exc:  # the parser's own bugs: still this expression's fault
        raise ConfigError("transform.jsonata", f"invalid JSONata: {exc!r}") from None
    expr.set_validate_input(False)  # the input is parsed JSON: nothing else to check
    expr.set_output_convert_nulls(False)  # tell JSON null from undefined (no value)
    return expr


def _jsonata_reason(exc: BaseException) -> str:
    code = getattr(exc, "error", None)
    location = getattr(exc, "location", -1)
    text = str(exc) or repr(exc)
    if isinstance(location, int) and location >= 0:
        text += f" (at position {location})"
    return f"{code}: {text}" if code else text


def event_document(event: Event) -> dict[str, Any]:
    """The event as a JSONata expression reads it: attributes, and ``data``."""
    doc: dict[str, Any] = dict(event.attrs)
    data = event.data
    if data is None:
        return doc
    ct = event.content_type
    if ct is None or is_json_media_type(ct):
        try:
            doc["data"] = orjson.loads(data)
            return doc
        except orjson.JSONDecodeError as exc:
            if ct is not None:
                raise EventError(f"data is not valid JSON ({exc})") from None
    try:
        doc["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        doc["data_base64"] = base64.b64encode(data).decode("ascii")
    return doc


class Transform:
    """A compiled ``transform`` of the egress rule named ``rule``."""

    def __init__(self, rule: str, cfg: TransformSettings, *, max_capture: int) -> None:
        self.rule = rule
        self.source = cfg.jsonata
        self._expr: Any = compile_jsonata(cfg.jsonata) if cfg.jsonata is not None else None
        attributes: dict[str, Template] = {}
        for name, value in cfg.attributes.items():
            try:
                attributes[name] = Template(value, max_capture=max_capture)
            except TemplateError as exc:
                raise ConfigError(f"transform.attributes.{name}", exc.reason) from None
        self.attributes = attributes

    def apply(self, event: Event, ctx: RenderContext) -> Event:
        """The event as this transform makes it; raises TransformError."""
        attrs: dict[str, AttrValue] = dict(event.attrs)
        data = event.data
        json_implied = event.json_implied
        if self._expr is not None:
            data = self._evaluate(event)
            attrs.pop("dataschema", None)
            attrs["datacontenttype"] = JSON_MEDIA_TYPE
            json_implied = False
        if self.attributes:
            try:
                for name, tmpl in self.attributes.items():
                    attrs[name] = tmpl.render(ctx)
                _validate_attributes(attrs)
            except (TemplateError, EventError) as exc:
                raise TransformError(self.rule, exc.reason) from None
        return Event(attrs, data, json_implied)

    def _evaluate(self, event: Event) -> bytes:
        try:
            doc = event_document(event)
        except EventError as exc:
            raise TransformError(self.rule, exc.reason) from None
        try:
            result = self._expr.evaluate(doc)
        except jsonata.JException as exc:
            raise TransformError(self.rule, _jsonata_reason(exc)) from None
        except RecursionError:
            raise TransformError(self.rule, "the expression recursed too deeply") from None
        except Exception as exc:  # jsonata-python's own faults on odd input
            raise TransformError(self.rule, repr(exc)) from None
        if result is None:
            raise TransformError(self.rule, "the expression produced no value (undefined)")
        try:
            return orjson.dumps(Utils.convert_nulls(result))
        except TypeError as exc:
            raise TransformError(self.rule, f"the result is not JSON: {exc}") from None
