"""Loading a configuration: YAML, ``${VAR}`` interpolation, ``MESH_`` overrides,
validation with every error reported at once, and the JSON Schema."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mesh.config.checks import semantic_errors
from mesh.config.models import MeshConfig
from mesh.core.errors import ConfigError, ConfigErrors

__all__ = ["json_schema", "load_config", "parse_config"]

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


def parse_config(
    data: Any, source: str = "<config>", env: Mapping[str, str] | None = None
) -> MeshConfig:
    """Validate an already-loaded YAML document; raise ConfigErrors with every problem."""
    env = os.environ if env is None else env
    errors: list[ConfigError] = []
    if not isinstance(data, dict):
        raise ConfigErrors(source, [ConfigError("", "the file must be a YAML mapping")])
    data = _interpolate(data, "", errors, env)
    config: MeshConfig | None = None
    try:
        config = MeshConfig(**data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
    errors.extend(semantic_errors(data))
    if errors or config is None:
        unique = list({str(e): e for e in errors}.values())
        raise ConfigErrors(source, unique)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> MeshConfig:
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
    return parse_config(data, str(p), env)


def json_schema() -> dict[str, Any]:
    schema = MeshConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Event mesh gateway node configuration"
    return schema
