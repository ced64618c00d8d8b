"""JSON Schemas checked at the edge, by CloudEvent type (pure but for reading schema files).

A :class:`Schemas` is compiled once per configuration (start and every
reload) from the ``schemas:`` entries: each names a CloudEvent ``type``
(exact, or a prefix ending in ``*``), a schema (a file, draft 2020-12 or 07,
or ``inline``) and where it is enforced (``ingress``, the default, or
``egress``). :meth:`Schemas.check` validates an event's ``data`` against
every entry that applies at that point — those whose type matches, and the
one its ``dataschema`` attribute names (the entry's ``schema`` as written,
its absolute path or ``file:`` URI, or the schema's ``$id``) — and returns
the reason of the first failure, naming the failing path::

    data.items[2].qty: -1 is less than the minimum of 1 (schema schemas/order.json)

Relative schema paths are taken from the node's working directory, like
every other path in the configuration (``node.data_dir``, ``tls``). A
``$ref`` to another document is followed to files only (relative to the
schema's file); the node fetches nothing from a network.
Validation is jsonschema-rs, compiled here once per schema; the lookup by
type is cached, so an event whose type has no schema costs a dict lookup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

import jsonschema_rs
import orjson

from mesh.core.errors import ConfigError, SchemaViolation
from mesh.core.event import Event, is_json_media_type

if TYPE_CHECKING:
    from mesh.config import SchemaEntry

__all__ = ["NO_SCHEMAS", "CompiledSchema", "Schemas", "format_path"]

Point = Literal["ingress", "egress"]
MAX_SCHEMA_BYTES = 4 << 20
_MAX_MESSAGE = 300  # characters of the validator's message kept in a reason
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CACHE_LIMIT = 4096  # distinct event types remembered by the type lookup


def format_path(path: Iterable[str | int]) -> str:
    """``data`` and a JSON instance path: ``data.items[2].qty``, ``data["a b"]``."""
    out = ["data"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One ``schemas[i]`` entry: its type pattern, point and compiled validator."""

    index: int
    type: str
    at: Point
    name: str  # how reasons and logs name it: the file as written, or schemas[i].inline
    names: frozenset[str]  # what a dataschema attribute may call it
    validator: Any
    document: Any = None  # the schema itself, for the AsyncAPI document and the catalog

    def matches_type(self, event_type: str) -> bool:
        if self.type.endswith("*"):
            return event_type.startswith(self.type[:-1])
        return event_type == self.type

    def first_error(self, value: Any) -> str | None:
        """None if ``value`` is valid, else the first failure as ``path: message``."""
        if self.validator.is_valid(value):
            return None
        for error in self.validator.iter_errors(value):
            message = error.message
            if len(message) > _MAX_MESSAGE:
                message = message[: _MAX_MESSAGE - 1] + "…"
            return f"{format_path(error.instance_path)}: {message} (schema {self.name})"
        return f"data: not valid (schema {self.name})"  # pragma: no cover - is_valid disagreed

    @classmethod
    def compile(cls, index: int, entry: SchemaEntry) -> CompiledSchema:
        """Read (a file) and compile one entry; ConfigError naming ``schemas[i].…``."""
        names: set[str] = set()
        if entry.schema_ is not None:
            key = f"schemas[{index}].schema"
            document = _read_schema(key, entry.schema_)
            path = Path(entry.schema_).absolute()
            names.update((entry.schema_, str(path), path.as_uri()))
            name = entry.schema_
        else:
            key = f"schemas[{index}].inline"
            document = entry.inline
            name = key
        if not isinstance(document, dict | bool):
            raise ConfigError(key, "a JSON Schema must be an object (or true/false)")
        base = Path(entry.schema_ or "inline.json").absolute().as_uri()
        try:
            validator = jsonschema_rs.validator_for(document, base_uri=base, retriever=_retrieve)
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            first = str(exc).split("\n", 1)[0]
            raise ConfigError(key, f"not a valid JSON Schema: {first}") from None
        if isinstance(document, dict) and isinstance(document.get("$id"), str):
            names.add(document["$id"])
        return cls(index, entry.type, entry.at, name, frozenset(names), validator, document)


def _retrieve(uri: str) -> Any:
    """A ``$ref`` to another document: files only; the node fetches nothing from a network."""
    if not uri.startswith("file:"):
        raise ValueError(f"only file references are followed, not {uri}")
    path = url2pathname(urlsplit(uri).path)
    with open(path, "rb") as f:
        raw = f.read(MAX_SCHEMA_BYTES + 1)
    if len(raw) > MAX_SCHEMA_BYTES:
        raise ValueError(f"{path} is larger than {MAX_SCHEMA_BYTES >> 20} MiB")
    return orjson.loads(raw)


def _read_schema(key: str, path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SCHEMA_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(key, f"cannot read {path}: {exc}") from None
    if len(raw) > MAX_SCHEMA_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_SCHEMA_BYTES >> 20} MiB")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(key, f"{path} is not JSON: {exc}") from None


class Schemas:
    """Every compiled schema of a configuration; :meth:`check` is the hot path."""

    def __init__(self, compiled: Sequence[CompiledSchema] = ()) -> None:
        self.compiled = tuple(compiled)
        self.points = frozenset(c.at for c in self.compiled)
        self._by_name: dict[str, CompiledSchema] = {}
        for c in self.compiled:
            for name in c.names:
                self._by_name.setdefault(name, c)
        self._by_type: dict[tuple[str, str], tuple[CompiledSchema, ...]] = {}

    @classmethod
    def compile(cls, entries: Sequence[SchemaEntry]) -> Schemas:
        """Compile every entry; raises the first ConfigError (``mesh validate`` finds all)."""
        return cls([CompiledSchema.compile(i, e) for i, e in enumerate(entries)])

    def __bool__(self) -> bool:
        return bool(self.compiled)

    def documents(self) -> dict[str, Any]:
        """CloudEvent type (or ``prefix*``) -> its JSON Schema; the first entry of a type wins."""
        out: dict[str, Any] = {}
        for c in self.compiled:
            out.setdefault(c.type, c.document)
        return out

    def applying(self, event: Event, at: Point) -> tuple[CompiledSchema, ...]:
        """The schemas that apply to ``event`` at ``at``: by type, then by dataschema."""
        key = (event.type, at)
        found = self._by_type.get(key)
        if found is None:
            found = tuple(c for c in self.compiled if c.at == at and c.matches_type(key[0]))
            if len(self._by_type) >= _CACHE_LIMIT:
                self._by_type.clear()
            self._by_type[key] = found
        ds = event.attrs.get("dataschema")
        if ds is not None and self._by_name:
            named = self._by_name.get(str(ds))
            if named is not None and named.at == at and named not in found:
                found = (*found, named)
        return found

    def check(self, event: Event, at: Point) -> str | None:
        """None if the event's data satisfies every schema that applies, else the reason."""
        if at not in self.points:
            return None
        schemas = self.applying(event, at)
        if not schemas:
            return None
        try:
            value = _json_data(event)
        except _NotJson as exc:
            return f"{exc} but schema {schemas[0].name} applies to type {event.type}"
        for schema in schemas:
            reason = schema.first_error(value)
            if reason is not None:
                return reason
        return None

    def enforce(self, event: Event, at: Point) -> None:
        """Raise :class:`SchemaViolation` unless the event's data is valid."""
        reason = self.check(event, at)
        if reason is not None:
            raise SchemaViolation(reason)


NO_SCHEMAS = Schemas()


class _NotJson(Exception):
    """The event's data is not a JSON value; the message says why."""


def _json_data(event: Event) -> Any:
    """The event's data as a JSON value (no data: null); _NotJson when it is not JSON."""
    if event.data is None:
        return None
    ct = event.content_type
    if ct is not None and not is_json_media_type(ct):
        raise _NotJson(f"data is not JSON (datacontenttype {ct})")
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise _NotJson(f"data is not valid JSON ({exc})") from None
