"""Loading a configuration: YAML, ``${VAR}`` interpolation, ``MESH_`` overrides,
validation with every error reported at once, and the JSON Schema."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, create_model

from mesh.config.checks import semantic_errors
from mesh.config.models import BrokerModel, MeshConfig
from mesh.core.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from mesh.plugins import BridgeSpec

__all__ = ["config_model", "json_schema", "load_config", "parse_config"]


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


# -- loading -----------------------------------------------------------------------

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


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
    "literal_error": None,
}


def _pydantic_errors(exc: ValidationError, kinds: list[str]) -> list[ConfigError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # Drop the discriminator tag pydantic puts in union locations (brokers.<name>.<kind>).
        if len(loc) > 2 and loc[0] == "brokers" and loc[2] in kinds:
            loc = loc[:2] + loc[3:]
        message = err["msg"]
        hint = _HINTS.get(err["type"])
        if err["type"] == "union_tag_invalid":
            hint = f"kind must be one of: {', '.join(kinds)}"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "string_pattern_mismatch" and loc and loc[-1] == "id":
            hint = "ids use lower-case letters, digits and '-'"
        out.append(ConfigError(_loc(loc), message, hint))
    return out


def parse_config(
    data: Any,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    specs: Mapping[str, BridgeSpec] | None = None,
) -> MeshConfig:
    """Validate an already-loaded YAML document; raise ConfigErrors with every problem.

    Broker entries are validated by the models of the bridges in ``specs``
    (default: every bridge installed).
    """
    env = os.environ if env is None else env
    specs = _specs(specs)
    errors: list[ConfigError] = []
    if not isinstance(data, dict):
        raise ConfigErrors(source, [ConfigError("", "the file must be a YAML mapping")])
    data = _interpolate(data, "", errors, env)
    config: MeshConfig | None = None
    try:
        config = config_model(specs)(**data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, list(specs)))
    errors.extend(semantic_errors(data, specs))
    if errors or config is None:
        unique = list({str(e): e for e in errors}.values())
        raise ConfigErrors(source, unique)
    return config


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    specs: Mapping[str, BridgeSpec] | None = None,
) -> MeshConfig:
    """Read, interpolate, override from the environment and validate a YAML file."""
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
    return parse_config(data, str(p), env, specs)


def json_schema(specs: Mapping[str, BridgeSpec] | None = None) -> dict[str, Any]:
    """The JSON Schema of a configuration file, with every installed bridge's broker model."""
    schema = config_model(specs).model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Event mesh gateway node configuration"
    return schema
