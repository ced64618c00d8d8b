"""Cross-field checks of a configuration that pydantic cannot express."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mesh.config.models import EgressRule, IngressRule
from mesh.core.errors import ConfigError, FilterError, MeshError, TemplateError
from mesh.core.filters import compile_filter
from mesh.core.templates import Template
from mesh.core.topics import Pattern, TopicError, to_mesh_pattern

__all__ = ["semantic_errors", "tolerant"]


def tolerant(model: type[BaseModel], raw: Any) -> Any:
    """Validate ``raw``, dropping keys that fail, so later checks still see the rest."""
    if not isinstance(raw, dict):
        return None
    for _ in range(3):
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            fields = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}
            if not bad or bad & fields:
                return None
            raw = {k: v for k, v in raw.items() if k not in bad}
    return None


# -- cross-field checks ------------------------------------------------------------


def semantic_errors(data: dict[str, Any]) -> list[ConfigError]:
    """Checks pydantic cannot express; run on every rule that is valid on its own."""
    errors: list[ConfigError] = []
    raw_brokers = data.get("brokers") or {}
    brokers: dict[str, Any] = {}
    if isinstance(raw_brokers, dict):
        for name, b in raw_brokers.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
                errors.append(ConfigError(f"brokers.{name}", "broker names use A-Z a-z 0-9 _ -"))
            brokers[str(name)] = b.get("kind") if isinstance(b, dict) else None
    known = ", ".join(brokers) or "(none defined)"
    node = data.get("node") if isinstance(data.get("node"), dict) else {}
    node_id = node.get("id") if isinstance(node, dict) else None

    for i, raw in enumerate(data.get("ingress") or []):
        path = f"ingress[{i}]"
        rule = tolerant(IngressRule, raw)
        if rule is None:
            continue
        kind = brokers.get(rule.from_)
        if rule.from_ not in brokers:
            errors.append(
                ConfigError(f"{path}.from", f"unknown broker {rule.from_!r}; known: {known}")
            )
            continue
        syntax: Literal["mqtt", "nats", "mesh"] = (
            "nats" if kind == "nats" else "mqtt" if kind == "mqtt" else "mesh"
        )
        try:
            pattern = Pattern.compile(to_mesh_pattern(rule.topic, syntax))
        except TopicError as exc:
            errors.append(
                ConfigError(
                    f"{path}.topic", exc.reason, "NATS uses * and >; MQTT and HTTP use + and #"
                )
            )
            continue
        if syntax == "nats" and ("+" in rule.topic.split(".") or "#" in rule.topic.split(".")):
            errors.append(ConfigError(f"{path}.topic", "NATS subjects use * and >, not + and #"))
        if syntax == "mqtt" and any(t in (">", "*") for t in rule.topic.split("/")):
            errors.append(ConfigError(f"{path}.topic", "MQTT topics use + and #, not * and >"))
        if rule.mesh_topic is not None:
            _check_template(
                errors, f"{path}.mesh_topic", rule.mesh_topic, pattern.wildcards, attributes=False
            )
        if rule.event is not None:
            for key in ("type", "source", "subject", "id", "dataschema", "datacontenttype"):
                value = getattr(rule.event, key)
                if value is not None:
                    _check_template(
                        errors, f"{path}.event.{key}", value, pattern.wildcards, attributes=False
                    )
            for ext, value in rule.event.extensions.items():
                if not re.fullmatch(r"[a-z0-9]+", ext) or ext == "data":
                    errors.append(
                        ConfigError(
                            f"{path}.event.extensions.{ext}", "attribute names use only a-z and 0-9"
                        )
                    )
                _check_template(
                    errors,
                    f"{path}.event.extensions.{ext}",
                    value,
                    pattern.wildcards,
                    attributes=False,
                )
        if rule.queue_group is not None and kind == "http":
            errors.append(ConfigError(f"{path}.queue_group", "HTTP ingress has no queue groups"))

    for i, raw in enumerate(data.get("egress") or []):
        path = f"egress[{i}]"
        rule_e = tolerant(EgressRule, raw)
        if rule_e is None:
            continue
        if rule_e.to not in brokers:
            errors.append(
                ConfigError(f"{path}.to", f"unknown broker {rule_e.to!r}; known: {known}")
            )
            continue
        try:
            pattern = Pattern.compile(rule_e.topic)
        except TopicError as exc:
            errors.append(
                ConfigError(f"{path}.topic", exc.reason, "mesh topics use '/' levels with + and #")
            )
            continue
        if rule_e.filter is not None:
            try:
                compile_filter(rule_e.filter)
            except FilterError as exc:
                errors.append(
                    ConfigError(
                        f"{path}.filter", str(exc).removeprefix("filter").lstrip(".: ") or str(exc)
                    )
                )
        _check_template(errors, f"{path}.target", rule_e.target, pattern.wildcards, attributes=True)
        kind = brokers.get(rule_e.to)
        if kind == "http" and not re.match(r"^https?://", rule_e.target):
            errors.append(ConfigError(f"{path}.target", "a webhook target must be an http(s) URL"))
        if kind == "mqtt" and rule_e.mode == "binary":
            b = raw_brokers.get(rule_e.to) or {}
            if str(b.get("protocol", 5)) == "3.1.1":
                errors.append(
                    ConfigError(
                        f"{path}.mode",
                        f"binary mode needs MQTT 5; broker {rule_e.to!r} speaks 3.1.1",
                        "use structured or data",
                    )
                )
        if kind == "mqtt" and re.search(r"[+#]", rule_e.target.replace("{", "").replace("}", "")):
            errors.append(
                ConfigError(f"{path}.target", "an MQTT publish topic cannot contain + or #")
            )
        if kind == "nats" and re.search(r"[*>\s]", rule_e.target):
            errors.append(
                ConfigError(f"{path}.target", "a NATS subject cannot contain *, > or spaces")
            )

    seen: dict[str, int] = {}
    for i, raw in enumerate(data.get("peers") or []):
        pid = raw.get("id") if isinstance(raw, dict) else None
        if pid is None:
            continue
        if pid == node_id:
            errors.append(ConfigError(f"peers[{i}].id", "a node cannot peer with itself"))
        if pid in seen:
            errors.append(
                ConfigError(
                    f"peers[{i}].id", f"duplicate peer {pid!r}", f"already at peers[{seen[pid]}]"
                )
            )
        seen[pid] = i
    return errors


def _check_template(
    errors: list[ConfigError], path: str, source: str, wildcards: int, *, attributes: bool
) -> None:
    try:
        Template(source, max_capture=wildcards, attributes=attributes)
    except TemplateError as exc:
        errors.append(ConfigError(path, exc.reason))
    except MeshError as exc:  # pragma: no cover - defensive
        errors.append(ConfigError(path, str(exc)))
