"""CloudEvents Subscriptions API filters, compiled into predicates.

A filter is a one-key mapping ``{dialect: value}``; a list of filters means
all of them. Dialects: ``exact``, ``prefix``, ``suffix`` (mapping of attribute
to string, case-sensitive, several keys AND-ed), ``all`` / ``any`` (non-empty
lists of filters), ``not`` (one filter) and ``sql`` (a CESQL expression).

A missing attribute never matches ``exact``/``prefix``/``suffix``; integer and
boolean attributes are compared in their canonical string form. ``sql`` passes
only when the expression yields Boolean true without an error.

Filters come from peers and clients, so they are bounded: at most
:data:`MAX_FILTER_DEPTH` levels of ``all``/``any``/``not``/list nesting and
:data:`MAX_FILTER_BYTES` bytes as JSON; a ``sql`` expression has the limits
of :mod:`mesh.core.cesql` (:data:`~mesh.core.cesql.MAX_EXPRESSION_LENGTH`).

:func:`compile_filter` validates and raises :class:`~mesh.core.errors.FilterError`
with a message naming the offending dialect or key. The original JSON form
travels with interests between nodes; :func:`canonical` gives it a stable key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from mesh.core.errors import CesqlError, FilterError
from mesh.core.event import ATTRIBUTE_NAME

__all__ = ["MAX_FILTER_BYTES", "MAX_FILTER_DEPTH", "Predicate", "canonical", "compile_filter"]

Predicate = Callable[[Mapping[str, Any]], bool]
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "sql")
MAX_FILTER_DEPTH = 32
MAX_FILTER_BYTES = 64 * 1024


def canonical(spec: Any) -> str:
    """A stable text form of a filter spec (sorted keys), used as an identity."""
    return orjson.dumps(spec, option=orjson.OPT_SORT_KEYS).decode()


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_filter(spec: Any, path: str = "filter") -> Predicate:
    """Compile a filter (or a list of filters) into a predicate over attributes.

    Raise :class:`FilterError` for an invalid filter, or one beyond the limits.
    """
    try:
        size = len(orjson.dumps(spec))
    except orjson.JSONEncodeError as exc:
        # orjson stops at 255 levels, far beyond MAX_FILTER_DEPTH.
        raise FilterError(
            f"{path}: a filter must be JSON nested at most {MAX_FILTER_DEPTH} levels deep ({exc})"
        ) from None
    if size > MAX_FILTER_BYTES:
        raise FilterError(
            f"{path}: filter of {size} bytes as JSON exceeds the limit of {MAX_FILTER_BYTES}"
        )
    return _compile(spec, path, 0)


def _compile(spec: Any, path: str, depth: int) -> Predicate:
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"{path}: filter nested more than {MAX_FILTER_DEPTH} levels deep")
    depth += 1
    if isinstance(spec, list):
        if not spec:
            return lambda attrs: True
        preds = [_compile(s, f"{path}[{i}]", depth) for i, s in enumerate(spec)]
        return _all(preds)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise FilterError(
            f"{path}: a filter is a mapping with exactly one dialect key "
            f"({', '.join(DIALECTS)}), got {spec!r}"
        )
    ((dialect, value),) = spec.items()
    where = f"{path}.{dialect}"
    if dialect in ("exact", "prefix", "suffix"):
        if not isinstance(value, Mapping) or not value:
            raise FilterError(f"{where}: expected a non-empty mapping of attribute to string")
        pairs: list[tuple[str, str]] = []
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise FilterError(f"{where}: attribute names must be non-empty strings")
            if not isinstance(v, str) or not v:
                name = k if ATTRIBUTE_NAME.fullmatch(k) else repr(k)  # one line, whatever k holds
                raise FilterError(f"{where}.{name}: value must be a non-empty string, got {v!r}")
            pairs.append((k, v))
        return _string_match(dialect, tuple(pairs))
    if dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"{where}: expected a non-empty list of filters")
        preds = [_compile(s, f"{where}[{i}]", depth) for i, s in enumerate(value)]
        return _all(preds) if dialect == "all" else _any(preds)
    if dialect == "not":
        inner = _compile(value, where, depth)
        return lambda attrs: not inner(attrs)
    if dialect == "sql":
        if not isinstance(value, str) or not value.strip():
            raise FilterError(f"{where}: expected a CESQL expression string")
        from mesh.core import cesql  # local import keeps filter users light

        try:
            expr = cesql.compile(value)
        except CesqlError as exc:
            raise FilterError(f"{where}: {exc}") from exc
        return expr.matches
    raise FilterError(f"{path}: unknown filter dialect {dialect!r}; known: {', '.join(DIALECTS)}")


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda attrs: all(p(attrs) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    return lambda attrs: any(p(attrs) for p in preds)


def _string_match(dialect: str, pairs: tuple[tuple[str, str], ...]) -> Predicate:
    if dialect == "exact":

        def exact(attrs: Mapping[str, Any]) -> bool:
            return all(_str(attrs.get(k)) == v for k, v in pairs)

        return exact
    if dialect == "prefix":

        def prefix(attrs: Mapping[str, Any]) -> bool:
            for k, v in pairs:
                s = _str(attrs.get(k))
                if s is None or not s.startswith(v):
                    return False
            return True

        return prefix

    def suffix(attrs: Mapping[str, Any]) -> bool:
        for k, v in pairs:
            s = _str(attrs.get(k))
            if s is None or not s.endswith(v):
                return False
        return True

    return suffix
