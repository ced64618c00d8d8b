"""Node configuration: one YAML file per node, modelled with pydantic.

Loading order: the YAML file, ``${VAR}`` / ``${VAR:-default}`` interpolation
of string values (``$${`` is a literal ``${``), then environment overrides
with the ``MESH_`` prefix and ``__`` between nested keys
(``MESH_NODE__LISTEN=0.0.0.0:7401``, ``MESH_BROKERS__PLANT__URL=...``).

:func:`load_config` reports *every* problem of a file at once as
:class:`~mesh.errors.ConfigErrors`, each with its path (``egress[0].to``) and
a hint. The JSON Schema of the file is :func:`json_schema`, generated from the
same models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mesh.errors import ConfigError, ConfigErrors, FilterError, MeshError, TemplateError
from mesh.filters import compile_filter
from mesh.templates import Template
from mesh.topics import Pattern, TopicError, to_mesh_pattern

__all__ = [
    "AcceptPeer",
    "Backoff",
    "Broker",
    "EgressRule",
    "EventTemplate",
    "HttpBroker",
    "IngressRule",
    "Limits",
    "MemoryBroker",
    "MeshConfig",
    "MqttBroker",
    "NatsBroker",
    "NodeSettings",
    "OnError",
    "OutboxSettings",
    "Peer",
    "RetryPolicy",
    "Storage",
    "json_schema",
    "load_config",
    "parse_config",
]

NODE_ID = r"^[a-z0-9][a-z0-9-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSettings(_Model):
    id: Annotated[str, Field(pattern=NODE_ID, description="Unique in the mesh: [a-z0-9-]")]
    region: str = Field("default", description="Region label, informational")
    listen: str = Field(
        "127.0.0.1:7401",
        description="host:port of the node's one HTTP server: peer links at /mesh, "
        "HTTP ingress at /events/<topic>, admin API at /api",
    )
    data_dir: Path = Field(Path("var/node"), description="Where durable state is kept")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class MqttBroker(_Model):
    kind: Literal["mqtt"]
    url: str = Field("mqtt://127.0.0.1:1883", pattern=r"^mqtts?://")
    protocol: Literal[5, "3.1.1"] = Field(5, description="MQTT protocol version: 5 or 3.1.1")
    client_id: str | None = Field(None, description="Default: mesh-<node id>-<broker name>")
    username: str | None = None
    password: str | None = None
    keepalive: int = Field(30, ge=5)
    session_expiry: int = Field(
        3600, ge=0, description="Seconds the broker keeps the session while the node is away"
    )
    max_inflight: int = Field(1000, ge=1, le=65535)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return 5 if v in ("5", "5.0", 5.0) else v

    @property
    def version(self) -> Literal["5", "3.1.1"]:
        return "5" if self.protocol == 5 else "3.1.1"


class NatsBroker(_Model):
    kind: Literal["nats"]
    url: str = Field("nats://127.0.0.1:4222", pattern=r"^(nats|tls)://")
    jetstream: bool = Field(
        False,
        description="Ingress from durable JetStream consumers, acknowledged after the node "
        "committed; egress published to JetStream with Nats-Msg-Id, confirmed by its ack. "
        "Core NATS (false) is at-most-once at ingress",
    )
    user: str | None = None
    password: str | None = None
    token: str | None = None


class HttpBroker(_Model):
    kind: Literal["http"]
    timeout: float = Field(10.0, gt=0, description="Seconds per webhook request")
    headers: dict[str, str] = Field(default_factory=dict, description="Added to every webhook")


class MemoryBroker(_Model):
    """An in-process broker, for unit tests and examples only (MQTT topic syntax)."""

    kind: Literal["memory"]
    name: str = Field("default", description="Bridges with the same name share one broker")


Broker = Annotated[MqttBroker | NatsBroker | HttpBroker | MemoryBroker, Field(discriminator="kind")]


class Peer(_Model):
    id: Annotated[str, Field(pattern=NODE_ID)]
    url: str = Field(pattern=r"^wss?://")
    token: str = Field(min_length=1, description="Shared secret; both sides must agree")
    outbox: OutboxSettings | None = Field(None, description="Default: the node's outbox")


class AcceptPeer(_Model):
    id: Annotated[str, Field(pattern=r"^([a-z0-9][a-z0-9-]*|\*)$")] = Field(
        description="Node id allowed to dial in, or '*' for any node holding the token"
    )
    token: str = Field(min_length=1)


class EventTemplate(_Model):
    """Attributes for payloads that are not CloudEvents; values are templates."""

    type: str = "mesh.message"
    source: str = "/{node}/{topic}"
    subject: str | None = None
    id: str | None = Field(None, description="Default: a fresh unique id")
    dataschema: str | None = None
    datacontenttype: str | None = Field(
        None, description="Default: the MQTT 5 content type, else detected from the payload"
    )
    extensions: dict[str, str] = Field(default_factory=dict)


class IngressRule(_Model):
    from_: str = Field(alias="from", description="Broker name")
    topic: str = Field(description="Pattern in the broker's own syntax")
    mesh_topic: str | None = Field(
        None, description="Template; default: the topic itself, levels joined by '/'"
    )
    event: EventTemplate | None = None
    qos: Literal[0, 1] = 1
    queue_group: str | None = Field(
        None, description="NATS queue group / MQTT shared subscription group for replicas"
    )
    durable: str | None = Field(
        None,
        description="JetStream durable consumer name (replicas sharing it share the work); "
        "default: mesh-<node>-<hash of the topic>",
    )


class Backoff(_Model):
    initial: float = Field(0.2, gt=0, description="Seconds before the first retry")
    max: float = Field(30.0, gt=0, description="Longest delay between retries")


class RetryPolicy(_Model):
    max_attempts: int = Field(0, ge=0, description="Attempts per event; 0: no limit")
    max_age: float = Field(
        0, ge=0, description="Seconds since the first failed attempt; 0: no limit"
    )
    backoff: Backoff = Field(default_factory=Backoff)


class OnError(_Model):
    """What egress does when a publish fails."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    then: Literal["dead-letter", "discard", "pause"] = Field(
        "dead-letter",
        description="After the retries, or at once for a permanent failure (a webhook "
        "answering 4xx other than 408/429): dead-letter the event, discard it (counted), "
        "or pause this egress until it is resumed",
    )


class OutboxSettings(_Model):
    """Bounds of an outbox and what happens when a new event does not fit."""

    max_bytes: int = Field(1 << 30, ge=0, description="0: unbounded")
    max_age: float = Field(0, ge=0, description="Seconds an event may wait; 0: forever")
    overflow: Literal["block", "drop-oldest", "reject-new"] = Field(
        "block",
        description="block: stop accepting (ingress stops acknowledging, HTTP answers 503); "
        "drop-oldest / reject-new: dead-letter the oldest queued / the new event",
    )


class EgressRule(_Model):
    to: str = Field(description="Broker name")
    topic: str = Field(description="Mesh-topic pattern: + one level, # the rest")
    filter: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="CloudEvents Subscriptions API filter"
    )
    target: str = Field(description="Topic / subject / URL template")
    mode: Literal["binary", "structured", "data"] = "binary"
    qos: Literal[0, 1] = 1
    retain: bool = False
    on_error: OnError = Field(default_factory=OnError)
    outbox: OutboxSettings | None = Field(None, description="Default: the node's outbox")


class Limits(_Model):
    max_event_size: int = Field(
        256 * 1024, ge=64 * 1024, description="Bytes; the spec asks for at least 64 KiB"
    )
    batch_size: int = Field(256, ge=1, description="Events per peer-link batch")
    link_credit: int = Field(4096, ge=1, description="Events a peer may have in flight to us")
    dedup_window: int = Field(
        1_000_000, ge=0, description="(source, id) pairs remembered for duplicate detection"
    )
    dedup_max_age: float = Field(
        7 * 86400, ge=0, description="Seconds a (source, id) pair is remembered; 0: no limit"
    )


class Storage(_Model):
    sync: Literal["normal", "full"] = Field(
        "normal",
        description="normal: commits survive a crash of the process; full: also of the "
        "operating system (an fsync per group commit)",
    )


class MeshConfig(BaseSettings):
    """A node's configuration file."""

    model_config = SettingsConfigDict(
        env_prefix="MESH_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    node: NodeSettings
    brokers: dict[str, Broker] = Field(default_factory=dict)
    peers: list[Peer] = Field(default_factory=list)
    accept: list[AcceptPeer] = Field(
        default_factory=list, description="Nodes allowed to dial this one, with their tokens"
    )
    ingress: list[IngressRule] = Field(default_factory=list)
    egress: list[EgressRule] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    outbox: OutboxSettings = Field(
        default_factory=OutboxSettings, description="Default bounds of every outbox"
    )
    storage: Storage = Field(default_factory=Storage)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file.
        return (env_settings, init_settings)

    def broker_syntax(self, name: str) -> Literal["mqtt", "nats", "mesh"]:
        kind = self.brokers[name].kind
        return "nats" if kind == "nats" else ("mqtt" if kind == "mqtt" else "mesh")


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


def _tolerant(model: type[BaseModel], raw: Any) -> Any:
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
    errors.extend(_semantic_errors(data))
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


# -- cross-field checks ------------------------------------------------------------


def _semantic_errors(data: dict[str, Any]) -> list[ConfigError]:
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
        rule = _tolerant(IngressRule, raw)
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
        rule_e = _tolerant(EgressRule, raw)
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
