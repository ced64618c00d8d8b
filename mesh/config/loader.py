"""Loading a configuration: YAML, ``${VAR}`` interpolation, ``MESH_`` overrides,
validation with every error reported at once, and the JSON Schema.

One path for every source of a value::

    file ─▶ YAML ─▶ ${VAR} interpolation ─▶ MESH_ overrides
                                                   │
       MeshConfig ◀── pydantic + semantic_errors ◀─┘

``MESH_`` overrides: the name after ``MESH_`` is split on ``__`` and each part
is matched case-insensitively against the keys in the data, else the model's
fields; an integer indexes a list entry (``MESH_EGRESS__0__MODE=data``). A
value stays a string (pydantic coerces ``"10"`` and ``"true"``; a ``Literal``
such as ``qos`` is coerced here), except that a value starting with ``{`` or
``[`` for a field that takes a mapping or a list is parsed as YAML flow. A
variable that names no key is an error naming it; every error under an
overridden path says which variable it came from.
"""

from __future__ import annotations

import functools
import os
import re
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from mesh.config.checks import semantic_errors
from mesh.config.models import MeshConfig
from mesh.core.errors import ConfigError, ConfigErrors

__all__ = ["json_schema", "load_config", "parse_config"]

# MESH_ variables that are not overrides. MESH_API_TOKEN is the CLI's own;
# MESH_SHARED_DIR is read by the test harness (tests/shared.py) and is set in
# the environment of the nodes the tests start.
EXEMPT = frozenset({"MESH_API_TOKEN", "MESH_SHARED_DIR"})
PREFIX = "MESH_"

# -- interpolation -----------------------------------------------------------------

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _interpolate(value: Any, path: str, errors: list[ConfigError], env: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(
                ConfigError(
                    path,
                    f"environment variable {name} is not set",
                    f"export {name}=... or write ${{{name}:-default}}",
                )
            )
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(path, str(k)), errors, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", errors, env) for i, v in enumerate(value)]
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- MESH_ overrides ---------------------------------------------------------------


class _BadVariable(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint


def _unwrap(ann: Any) -> list[Any]:
    """The alternatives of an annotation: Annotated and Optional removed, unions split."""
    if get_origin(ann) is Annotated:
        return _unwrap(get_args(ann)[0])
    if get_origin(ann) in (Union, types.UnionType):
        return [a for arg in get_args(ann) for a in _unwrap(arg) if a is not type(None)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _models(ann: Any, node: Any) -> list[type[BaseModel]]:
    """The models ``node`` may be; a discriminated union narrowed by the node's ``kind``."""
    models = [a for a in _unwrap(ann) if _is_model(a)]
    kind = node.get("kind") if isinstance(node, dict) else None
    chosen = [m for m in models if "kind" in m.model_fields and kind in _tags(m)]
    return chosen or models


def _tags(model: type[BaseModel]) -> tuple[Any, ...]:
    return get_args(_hints(model)["kind"])


@functools.cache
def _hints(model: type[BaseModel]) -> dict[str, Any]:
    # Not model_fields[...].annotation: that can still be a ForwardRef.
    return typing.get_type_hints(model, include_extras=True)


def _container(ann: Any, origin: type) -> Any | None:
    """The item type if ``ann`` allows a ``list`` / the value type for a ``dict``."""
    for a in _unwrap(ann):
        if get_origin(a) is origin:
            return get_args(a)[-1] if get_args(a) else Any
    return None


def _child_key(node: dict[Any, Any] | None, part: str, ann: Any, path: str) -> tuple[str, Any]:
    """The key ``part`` names in ``node`` (or in its model) and the type of its value."""
    keys = [k for k in node or {} if isinstance(k, str)]
    same = [k for k in keys if k.casefold() == part.casefold()]
    models = _models(ann, node)
    if len(same) > 1 and part not in same:
        raise _BadVariable(
            f"matches several keys of {path or 'the file'}: {', '.join(same)}",
            "names that differ only in case cannot be overridden",
        )
    for model in models:
        for name, field in model.model_fields.items():
            alias = field.alias or name
            if part.casefold() in (alias.casefold(), name.casefold()):
                key = (part if part in same else same[0]) if same else alias
                return key, _hints(model)[name]
    values = _container(ann, dict)
    if same:  # a key the model does not know is left to validation
        return (part if part in same else same[0]), None if models else values
    if models or (values is None and ann is not None and ann is not Any):
        fields = sorted({f.alias or n for m in models for n, f in m.model_fields.items()})
        where = path or "the top level"
        raise _BadVariable(
            "names no configuration key",
            f"{where} has no key {part.lower()!r}; known: {', '.join(fields)}"
            if fields
            else f"{where} is not a mapping",
        )
    return part.lower(), values


def _resolve(data: dict[str, Any], parts: list[str]) -> tuple[list[str | int], str, Any]:
    """Keys, display path and value type that the parts of a variable name."""
    node: Any = data
    ann: Any = MeshConfig
    keys: list[str | int] = []
    path = ""
    for part in parts:
        if not part:
            raise _BadVariable(
                "names no configuration key",
                "levels are separated by two underscores, as in MESH_NODE__LISTEN",
            )
        items = _container(ann, list)
        index_like = re.fullmatch(r"[0-9]+", part) is not None
        maps = _container(ann, dict) is not None or bool(_models(ann, None))
        if isinstance(node, list) or (
            node is None and items is not None and (index_like or not maps)
        ):
            entries = node or []
            if not index_like:
                raise _BadVariable(
                    f"{path} is a list; the next level must be an index",
                    f"as in MESH_{path.upper()}__0__...",
                )
            index = int(part)
            if index >= len(entries):
                raise _BadVariable(
                    f"index {index} is past the end of {path} "
                    f"({len(entries)} {'entry' if len(entries) == 1 else 'entries'})",
                    "an override changes an entry of the file; add new entries in the file",
                )
            key: str | int = index
            node, ann, path = entries[index], items, f"{path}[{index}]"
        elif node is None or isinstance(node, dict):
            key, ann = _child_key(node, part, ann, path)
            node, path = (node or {}).get(key), _join(path, key)
        else:
            raise _BadVariable(
                f"{path} is {_kind(node)} in the configuration, not a mapping",
                "override the whole value instead",
            )
        keys.append(key)
    return keys, path, ann


def _put(data: dict[str, Any], keys: list[str | int], value: Any) -> None:
    """Set ``value`` at ``keys``, creating the mapping levels that are missing."""
    node: Any = data
    for key in keys[:-1]:
        child = node.get(key) if isinstance(node, dict) else node[key]
        if not isinstance(child, dict | list):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _takes_structure(ann: Any) -> bool:
    if ann is None or ann is Any:
        return True
    return any(
        _is_model(a) or a is Any or get_origin(a) in (dict, list) or a in (dict, list)
        for a in _unwrap(ann)
    )


def _value(raw: str, ann: Any) -> Any:
    if raw[:1] in ("{", "[") and _takes_structure(ann):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"column {mark.column + 1}: " if mark else ""
            raise _BadVariable(
                f"invalid YAML value: {where}{getattr(exc, 'problem', None) or exc}",
                "a value starting with { or [ is read as YAML flow",
            ) from None
    for a in _unwrap(ann):
        if get_origin(a) is Literal:
            for choice in get_args(a):
                if not isinstance(choice, str) and str(choice) == raw:
                    return choice
    return raw


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str], referenced: Collection[str]
) -> tuple[dict[str, str], list[ConfigError]]:
    """Merge ``MESH_`` variables into ``data``; return {config path: variable} and errors."""
    applied: dict[str, str] = {}
    errors: list[ConfigError] = []
    names = [
        n
        for n in environ
        if n.upper().startswith(PREFIX) and n not in referenced and n.upper() not in EXEMPT
    ]
    # Whole sections first, so that MESH_NODE__ID refines MESH_NODE='{...}'.
    for name in sorted(names, key=lambda n: (n.count("__"), n)):
        try:
            keys, path, ann = _resolve(data, name[len(PREFIX) :].split("__"))
            _put(data, keys, _value(environ[name], ann))
        except _BadVariable as exc:
            errors.append(ConfigError(name, exc.message, exc.hint))
            continue
        applied[path] = name
    return applied, errors


def _origin(path: str, applied: Mapping[str, str]) -> str | None:
    """The variable that set ``path`` or one of its parents, the most specific one."""
    under = [p for p in applied if path == p or path.startswith((p + ".", p + "["))]
    return applied[max(under, key=len)] if under else None


def _from(error: ConfigError, applied: Mapping[str, str]) -> ConfigError:
    name = _origin(error.path, applied)
    if name is None:
        return error
    hint = f"from {name}" + (f"; {error.hint}" if error.hint else "")
    return ConfigError(error.path, error.message, hint)


# -- validation --------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, part)
    return out


_HINTS = {
    "extra_forbidden": "remove it or check its spelling",
    "missing": "this key is required",
    "union_tag_invalid": "kind must be one of: mqtt, nats, http, memory",
    "literal_error": None,
}


def _pydantic_errors(exc: ValidationError) -> list[ConfigError]:
    out = []
    for err in exc.errors(include_url=False):
        # Drop the discriminator tag pydantic puts in union locations.
        loc = tuple(
            p
            for p in err["loc"]
            if p not in ("mqtt", "nats", "http", "memory") or not isinstance(p, str)
        )
        message = err["msg"]
        hint = _HINTS.get(err["type"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "string_pattern_mismatch" and loc and loc[-1] == "id":
            hint = "ids use lower-case letters, digits and '-'"
        out.append(ConfigError(_loc(loc), message, hint))
    return out


def _validate(
    data: Any,
    source: str,
    env: Mapping[str, str],
    overrides: Mapping[str, str],
    referenced: Collection[str],
) -> MeshConfig:
    if not isinstance(data, dict):
        raise ConfigErrors(source, [ConfigError("", "the file must be a YAML mapping")])
    errors: list[ConfigError] = []
    data = _interpolate(data, "", errors, env)  # a copy: overrides may change it
    applied, override_errors = _apply_overrides(data, overrides, referenced)
    # A value an override replaced no longer needs its ${VAR}.
    errors = override_errors + [e for e in errors if _origin(e.path, applied) is None]
    config: MeshConfig | None = None
    try:
        config = MeshConfig.model_validate(data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
    errors.extend(semantic_errors(data))
    if errors or config is None:
        unique = list({str(e): e for e in (_from(e, applied) for e in errors)}.values())
        raise ConfigErrors(source, unique)
    return config


def parse_config(
    data: Any,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
) -> MeshConfig:
    """Validate an already-loaded YAML document; raise ConfigErrors with every problem.

    ``env`` (default: the process environment) serves ``${VAR}``; ``MESH_``
    overrides come from ``overrides`` (default: the process environment).
    """
    env = os.environ if env is None else env
    overrides = os.environ if overrides is None else overrides
    referenced = {m for s in _strings(data) for m in _REFERENCE.findall(s)}
    return _validate(data, source, env, overrides, referenced)


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
) -> MeshConfig:
    """Read, interpolate, override from the environment and validate a YAML file.

    ``env`` and ``overrides`` as for :func:`parse_config`; variables the file
    references as ``${NAME}`` (even in a comment) are not overrides.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors(str(p), [ConfigError("", f"cannot read file: {exc.strerror}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigErrors(str(p), [ConfigError("", f"{where}invalid YAML: {exc}")]) from exc
    env = os.environ if env is None else env
    overrides = os.environ if overrides is None else overrides
    referenced = set(_REFERENCE.findall(text))
    return _validate(data, str(p), env, overrides, referenced)


def json_schema() -> dict[str, Any]:
    schema = MeshConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Event mesh gateway node configuration"
    return schema
