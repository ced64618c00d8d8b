"""Loading a configuration: YAML, ``${VAR}`` interpolation, ``MESH_`` overrides,
validation with every error reported at once, and the JSON Schema.

One path for every source of a value::

    file bytes ─▶ UTF-8 ─▶ strict YAML ─▶ ${VAR} interpolation ─▶ MESH_ overrides
                                                                      │
                          MeshConfig ◀── pydantic + semantic_errors ◀─┘

Strict YAML: duplicate keys, keys that are not strings, aliases (``*x``) and
merge keys (``<<``) are errors with their line; aliases are refused while the
document is composed, before anything could be expanded.

``MESH_`` overrides: the name after ``MESH_`` is split on ``__`` and each part
is matched case-insensitively against the keys in the data, else the model's
fields; an integer indexes a list entry (``MESH_EGRESS__0__MODE=data``). A
value stays a string (pydantic coerces ``"10"`` and ``"true"``; a ``Literal``
such as ``qos`` is coerced here), except that a value starting with ``{`` or
``[`` for a field that takes a mapping or a list is parsed as YAML flow. A
variable that names no key is an error naming it; every error under an
overridden path says which variable it came from.

Whatever the input, :func:`load_config` and :func:`parse_config` raise only
:class:`~mesh.core.errors.ConfigErrors`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from mesh.config.checks import semantic_errors
from mesh.config.models import BrokerModel, MeshConfig, NodeSettings
from mesh.core.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from mesh.plugins import BridgeSpec

__all__ = ["config_model", "json_schema", "load_config", "load_node_settings", "parse_config"]


def _specs(specs: Mapping[str, BridgeSpec] | None) -> Mapping[str, BridgeSpec]:
    if specs is not None:
        return specs
    from mesh.plugins import load_specs  # the registry imports bridges, which import config

    return load_specs()


def config_model(specs: Mapping[str, BridgeSpec] | None = None) -> type[MeshConfig]:
    """The configuration model whose ``brokers`` are the registered bridges' models."""
    return _config_model(tuple(s.config for s in _specs(specs).values()))


@functools.cache
def _config_model(models: tuple[type[BrokerModel], ...]) -> type[MeshConfig]:
    broker: Any
    if not models:
        broker = BrokerModel
    elif len(models) == 1:
        broker = models[0]
    else:
        broker = Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
    model: type[MeshConfig] = create_model(
        "MeshConfig",
        __base__=MeshConfig,
        __module__=MeshConfig.__module__,
        brokers=(dict[str, broker], Field(default_factory=dict)),
    )
    return model


log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 64

# MESH_ variables that are not overrides. MESH_API_TOKEN and MESH_API_CACERT,
# _CERT, _KEY are the CLI's own; MESH_SHARED_DIR is read by the test harness
# (tests/shared.py) and is set in the environment of the nodes the tests start.
EXEMPT = frozenset(
    {"MESH_API_TOKEN", "MESH_API_CACERT", "MESH_API_CERT", "MESH_API_KEY", "MESH_SHARED_DIR"}
)
PREFIX = "MESH_"

# -- strict YAML -------------------------------------------------------------------


class _YamlErrors(Exception):
    """What makes a text no plain YAML document, raised inside the loader."""

    def __init__(self, *errors: ConfigError) -> None:
        self.errors = list(errors)


def _at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and documents nested beyond MAX_DEPTH."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _YamlErrors(
                ConfigError(
                    "",
                    # The alias's name is not quoted: an unquoted value starting with
                    # '*' (a token, say) is read as one.
                    f"{_at(event.start_mark)}: YAML aliases (*name) are not "
                    "supported in a configuration file",
                    "write the value out in full",
                )
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _YamlErrors(
                    ConfigError("", f"{_at(mark)}: nested more than {MAX_DEPTH} levels deep")
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            if len(node.value) < 1000:
                raise
            # More digits than int() converts (sys.get_int_max_str_digits()).
            where = _at(node.start_mark)
            raise _YamlErrors(
                ConfigError("", f"{where}: integer too large ({len(node.value)} digits)")
            ) from None

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (_YamlErrors, yaml.YAMLError):
            raise
        except Exception:  # an explicit tag on a value it does not fit: !!float abc
            value = node.value if isinstance(node, yaml.ScalarNode) else ""
            tag = str(node.tag).rpartition(":")[2]
            raise _YamlErrors(
                ConfigError("", f"{_at(node.start_mark)}: {value[:40]!r} is not a valid !!{tag}")
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _check_keys(node: yaml.Node, path: str, problems: list[ConfigError]) -> None:
    """Duplicate, non-string and merge keys anywhere in the tree, with their lines."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(item, f"{path}[{i}]", problems)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key, value in node.value:
            where = _at(key.start_mark)
            if key.tag == _MERGE:
                problems.append(
                    ConfigError(
                        path,
                        f"{where}: YAML merge keys (<<) are not supported in a configuration file",
                        "write the keys out in full",
                    )
                )
                continue
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                problems.append(_key_error(key, path))
                continue
            name = str(key.value)
            child = _join(path, name)
            if name in first:
                problems.append(
                    ConfigError(
                        child,
                        f"duplicate key at {where}",
                        f"first at {_at(first[name].start_mark)}",
                    )
                )
            else:
                first[name] = key
            _check_keys(value, child, problems)


_READ_AS = {"int": "a number", "float": "a number", "bool": "a boolean", "null": "null"}


def _key_error(key: yaml.Node, path: str) -> ConfigError:
    where = _at(key.start_mark)
    if not isinstance(key, yaml.ScalarNode):
        what = "a list" if isinstance(key, yaml.SequenceNode) else "a mapping"
        return ConfigError(path, f"{where}: a key must be a string, not {what}")
    tag = str(key.tag).rpartition(":")[2]
    what = _READ_AS.get(tag, f"a {tag}")
    return ConfigError(
        path,
        f"{where}: key {key.value!r} is {what} in YAML, not a string",
        f'quote it: "{key.value}"',
    )


def _yaml_error(exc: yaml.YAMLError, text: str) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not a YAML document"
        hint = None
        if "\\t" in problem:
            hint = "YAML indents with spaces, not tabs"
        elif exc.context and exc.problem:
            hint = exc.context + (
                f" at {_at(exc.context_mark)}"
                if exc.context_mark and exc.context_mark != exc.problem_mark
                else ""
            )
        return ConfigError("", f"{_at(mark)}: invalid YAML: {_one_line(problem)}", hint)
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.position, int):
        pos = exc.position
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        return ConfigError(
            "",
            f"line {line}, column {col}: invalid YAML: character #x{exc.character:04x} "
            "is not allowed",
        )
    return ConfigError("", f"invalid YAML: {_one_line(str(exc))}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_yaml(text: str) -> Any:
    """The document in ``text``; raise a list of ConfigError for anything not plain YAML."""
    try:
        loader = _Loader(text)  # checks the characters at once
    except yaml.YAMLError as exc:
        raise _YamlErrors(_yaml_error(exc, text)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems: list[ConfigError] = []
        _check_keys(node, "", problems)
        if problems:
            raise _YamlErrors(*problems)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _YamlErrors(_yaml_error(exc, text)) from None
    finally:
        loader.dispose()


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


def _resolve(
    data: dict[str, Any], parts: list[str], root: type[MeshConfig]
) -> tuple[list[str | int], str, Any]:
    """Keys, display path and value type that the parts of a variable name."""
    node: Any = data
    ann: Any = root
    keys: list[str | int] = []
    path = ""
    for depth, part in enumerate(parts):
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
                    f"as in MESH_{'__'.join(parts[:depth])}__0__...",
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
            return _parse_yaml(raw)
        except _YamlErrors as exc:
            raise _BadVariable(
                "invalid YAML value: "
                + "; ".join(
                    _join(e.path, e.message).replace("invalid YAML: ", "") for e in exc.errors
                ),
                "a value starting with { or [ is read as YAML flow",
            ) from None
    for a in _unwrap(ann):
        if get_origin(a) is Literal:
            for choice in get_args(a):
                if not isinstance(choice, str) and str(choice) == raw:
                    return choice
    return raw


def _apply_overrides(
    data: dict[str, Any],
    environ: Mapping[str, str],
    referenced: Collection[str],
    root: type[MeshConfig],
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
            keys, path, ann = _resolve(data, name[len(PREFIX) :].split("__"), root)
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


_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _loc(loc: tuple[int | str, ...], data: Any) -> str | None:
    """The key path of a pydantic location, or None for a union branch the value is not.

    Pydantic puts the tag of a discriminated union (``mqtt``) and the branch
    of a plain one (``list[dict[str,any]]``) into locations; they are no keys.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, str) and not (isinstance(node, dict) and part in node):
            if isinstance(node, dict) and node.get("kind") == part:
                continue
            if "[" in part:
                if part.startswith("dict[") and isinstance(node, list):
                    return None
                if part.startswith("list[") and isinstance(node, dict):
                    return None
                continue
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            out = _join(out, part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


_HINTS = {
    "extra_forbidden": "remove it or check its spelling",
    "missing": "this key is required",
    "literal_error": None,
}


def _pydantic_errors(exc: ValidationError, data: Any, kinds: list[str]) -> list[ConfigError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _loc(err["loc"], data)
        if loc is None:
            continue
        message = _one_line(err["msg"]).removeprefix("Value error, ")
        hint = _HINTS.get(err["type"])
        if err["type"] == "union_tag_invalid":
            hint = f"kind must be one of: {', '.join(kinds)}"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "string_pattern_mismatch" and loc.rpartition(".")[2] == "id":
            hint = "ids use lower-case letters, digits and '-', at most 63"
        out.append(ConfigError(loc, message, hint))
    return out


def _validate(
    data: Any,
    source: str,
    env: Mapping[str, str],
    overrides: Mapping[str, str],
    referenced: Collection[str],
    specs: Mapping[str, BridgeSpec] | None,
) -> MeshConfig:
    specs = _specs(specs)
    model = config_model(specs)
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"the file is {_kind(data)}"
        raise ConfigErrors(
            source, [ConfigError("", f"{what}; it must be a YAML mapping", "start with node: ...")]
        )
    unset: list[ConfigError] = []
    data = _interpolate(data, "", unset, env)  # a copy: overrides may change it
    applied, errors = _apply_overrides(data, overrides, referenced, model)
    # A value an override replaced no longer needs its ${VAR}; one that still
    # lacks it is wrong anyway, and its other errors would only repeat that.
    unset = [e for e in unset if _origin(e.path, applied) is None]
    errors += unset
    skip = {e.path for e in unset}
    config: MeshConfig | None = None
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        errors.extend(e for e in _pydantic_errors(exc, data, list(specs)) if e.path not in skip)
    try:
        errors.extend(e for e in semantic_errors(data, specs) if e.path not in skip)
    except Exception:
        # The cross-field checks expect the shapes pydantic checks (a list of
        # rules, hashable ids); when pydantic refused the data, its errors say
        # what to fix first. Otherwise this is a bug: let it show.
        if config is not None:
            raise
        log.debug("semantic checks skipped for %s", source, exc_info=True)
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
    specs: Mapping[str, BridgeSpec] | None = None,
) -> MeshConfig:
    """Validate an already-loaded YAML document; raise ConfigErrors with every problem.

    ``env`` (default: the process environment) serves ``${VAR}``; ``MESH_``
    overrides come from ``overrides`` (default: the process environment).
    Broker entries are validated by the models of the bridges in ``specs``
    (default: every bridge installed).
    """
    env = os.environ if env is None else env
    overrides = os.environ if overrides is None else overrides
    referenced = {m for s in _strings(data) for m in _REFERENCE.findall(s)}
    return _validate(data, source, env, overrides, referenced, specs)


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
    specs: Mapping[str, BridgeSpec] | None = None,
) -> MeshConfig:
    """Read, interpolate, override from the environment and validate a YAML file.

    ``env`` and ``overrides`` as for :func:`parse_config`; variables the file
    references as ``${NAME}`` (even in a comment) are not overrides.
    """
    source = str(path)
    data, text = _read(path)
    env = os.environ if env is None else env
    overrides = os.environ if overrides is None else overrides
    referenced = set(_REFERENCE.findall(text))
    return _validate(data, source, env, overrides, referenced, specs)


def load_node_settings(path: str | Path, env: Mapping[str, str] | None = None) -> NodeSettings:
    """Only the ``node`` section of a configuration file, interpolated and validated.

    For the CLI, which needs where a node listens and whether it serves TLS,
    not the secrets of the rest of the file: a ``${VAR}`` elsewhere may be unset.
    """
    source = str(path)
    data, _text = _read(path)
    node = data.get("node") if isinstance(data, dict) else None
    if not isinstance(node, dict):
        raise ConfigErrors(source, [ConfigError("node", "missing: the file has no node section")])
    errors: list[ConfigError] = []
    node = _interpolate(node, "node", errors, os.environ if env is None else env)
    if errors:
        raise ConfigErrors(source, errors)
    try:
        return NodeSettings.model_validate(node)
    except ValidationError as exc:
        raise ConfigErrors(
            source,
            [
                ConfigError(_join("node", ".".join(str(p) for p in e["loc"])), e["msg"])
                for e in exc.errors()
            ],
        ) from None


def _read(path: str | Path) -> tuple[Any, str]:
    """A configuration file's YAML document and its text; ConfigErrors if unreadable."""
    source = str(path)

    def fail(message: str, hint: str | None = None) -> ConfigErrors:
        return ConfigErrors(source, [ConfigError("", message, hint)])

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL in the path
        raise fail(f"cannot read file: {exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise fail(f"the file is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, start) + 1
        column = len(raw[start : exc.start].decode("utf-8", "replace")) + 1
        raise fail(
            f"line {line}, column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            "save the file as UTF-8",
        ) from None
    try:
        return _parse_yaml(text), text
    except _YamlErrors as exc:
        raise ConfigErrors(source, exc.errors) from None


def json_schema(specs: Mapping[str, BridgeSpec] | None = None) -> dict[str, Any]:
    """The JSON Schema of a configuration file, with every installed bridge's broker model."""
    schema = config_model(specs).model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Event mesh gateway node configuration"
    return schema
