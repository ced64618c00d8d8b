"""The configuration models: one YAML file per node, modelled with pydantic.

Every model forbids unknown keys. :mod:`mesh.config.loader` reads a file into
them; :mod:`mesh.config.checks` adds the cross-field checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from mesh.core.errors import FilterError
from mesh.core.event import ATTRIBUTE_NAME
from mesh.core.rules import TopicRule
from mesh.core.topics import TopicError

# Re-exported, with the loader, by mesh.config (its __all__ is the public list).

# What a transform may not set: the spec version, and the media type of its own data.
_FIXED_ATTRIBUTES = frozenset({"specversion", "datacontenttype"})
NODE_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"  # as the link protocol checks it (mesh.core.frames)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


ClientAuth = Literal["required", "optional", "none"]


class NodeTls(_Model):
    """TLS on the node's listener: with it, the node serves HTTPS and WSS only."""

    cert: Path = Field(
        description="PEM file with the node's certificate chain (leaf first); "
        "a relative path is taken from the node's working directory, like data_dir",
    )
    key: Path = Field(description="PEM file with the private key of cert")
    ca: Path | None = Field(
        None,
        description="PEM file with the CA certificate(s) that peer client certificates "
        "must chain to; needed when client_auth is required or optional",
    )
    client_auth: ClientAuth = Field(
        "none",
        description="required: every client (peers, API and ingress clients) must present a "
        "certificate from ca, or the TLS handshake fails; optional: one is verified if "
        "presented; none: none is asked for. A verified certificate on a peer link must "
        "name the node id of the hello (SAN DNS or URI, else the subject CN)",
    )


class ClientTls(_Model):
    """TLS as a client (dialling a wss:// peer, connecting to a broker): whom to trust
    and which certificate to present. Paths are relative to the working directory."""

    ca: Path | None = Field(
        None,
        description="PEM file with the CA(s) the server's certificate (the peer's or the "
        "broker's) must chain to; default: the system's CAs",
    )
    cert: Path | None = Field(
        None,
        description="PEM file with this node's client certificate chain (and any "
        "intermediates), for mutual TLS; needs key",
    )
    key: Path | None = Field(
        None, description="PEM file with the private key of cert (not encrypted)"
    )

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.cert is None) != (self.key is None):
            have, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise ValueError(
                f"tls.{have} is set without tls.{missing}: a client certificate needs both"
            )
        return self


class NodeSettings(_Model):
    id: Annotated[str, Field(pattern=NODE_ID, description="Unique in the mesh: [a-z0-9-]{1,63}")]
    region: str = Field("default", description="Region label, informational")
    listen: str = Field(
        "127.0.0.1:7401",
        description="host:port of the node's one HTTP server: peer links at /mesh, "
        "HTTP ingress at /events/<topic>, admin API at /api",
    )
    data_dir: Path = Field(Path("var/node"), description="Where durable state is kept")
    tls: NodeTls | None = Field(
        None, description="Serve TLS (HTTPS, WSS) on listen, nothing in clear; default: plain"
    )
    canary_interval: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between canaries on each peer link: a canary goes through the "
        "peer's router and store like an event; no answer within three intervals marks the "
        "link degraded",
    )

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


class BrokerModel(_Model):
    """Base of every broker's configuration model; each bridge plugin defines its own.

    A subclass sets ``kind`` to ``Literal["<kind>"]``; the configuration's
    ``brokers`` union is built from the registered bridges' models
    (:func:`mesh.config.loader.config_model`).
    """

    kind: str


class TopicRuleEntry(_Model):
    """An import or export entry with a filter (a bare pattern is written as a string)."""

    topic: str = Field(description="Mesh-topic pattern: + one level, # the rest")
    filter: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="CloudEvents Subscriptions API filter, as for egress subscriptions"
    )


TopicRules = list[str | TopicRuleEntry]


def _everything() -> TopicRules:
    return ["#"]


def _rules(value: TopicRules) -> TopicRules:
    """Compiled once here, so a bad pattern or filter is a config error naming the entry."""
    for n, entry in enumerate(value):
        try:
            TopicRule.compile(entry if isinstance(entry, str) else entry.model_dump())
        except TopicError as exc:
            raise ValueError(f"entry {n}: {exc.reason} ({exc.topic!r})") from None
        except FilterError as exc:
            raise ValueError(f"entry {n}: {exc}") from None
    return value


class _PeerRules(_Model):
    import_: TopicRules = Field(
        default_factory=_everything,
        alias="import",
        description="Mesh-topic patterns (or {topic, filter}) this node takes from the peer; "
        "events outside them are dropped at the link, counted in "
        'mesh_link_denied_events_total{direction="import"}',
    )
    export: TopicRules = Field(
        default_factory=_everything,
        description="Mesh-topic patterns (or {topic, filter}) the peer may receive from this "
        "node: its interests are narrowed to them, transit included",
    )

    _check_import = field_validator("import_")(_rules)
    _check_export = field_validator("export")(_rules)

    def rule_entries(self, which: Literal["import", "export"]) -> list[Any]:
        entries = self.import_ if which == "import" else self.export
        return [e if isinstance(e, str) else e.model_dump() for e in entries]


class Peer(_PeerRules):
    id: Annotated[str, Field(pattern=NODE_ID)]
    url: str = Field(pattern=r"^wss?://")
    token: SecretStr = Field(min_length=1, description="Shared secret; both sides must agree")
    outbox: OutboxSettings | None = Field(None, description="Default: the node's outbox")
    tls: ClientTls | None = Field(
        None,
        description="For a wss:// url: CA to verify the peer against (default: the system's) "
        "and the client certificate to present",
    )


class AcceptPeer(_PeerRules):
    id: Annotated[str, Field(pattern=r"^([a-z0-9][a-z0-9-]{0,62}|\*)$")] = Field(
        description="Node id allowed to dial in, or '*' for any node holding the token"
    )
    token: SecretStr = Field(min_length=1)


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


class TransformSettings(_Model):
    """New data (JSONata) and attributes (templates) for events of an egress rule."""

    jsonata: str | None = Field(
        None,
        min_length=1,
        description="JSONata expression over the event as one JSON object (attributes at the "
        "top level, data under data); its result is the new data, as application/json",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Attributes to set, as templates (like target: {1}, {topic}, {type}, "
        "{data.x} of the event as it arrived)",
    )

    @field_validator("attributes")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not ATTRIBUTE_NAME.fullmatch(name) or name == "data":
                raise ValueError(f"{name!r} is not a CloudEvents attribute name (only a-z and 0-9)")
            if name in _FIXED_ATTRIBUTES:
                raise ValueError(f"{name!r} cannot be set by a transform")
        return v

    @model_validator(mode="after")
    def _something(self) -> TransformSettings:
        if self.jsonata is None and not self.attributes:
            raise ValueError("a transform needs jsonata, attributes or both")
        return self


class EgressRule(_Model):
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="The rule's name in metrics, outboxes, logs and the CLI; "
        "default <to>:<index>, its broker and its place in egress",
    )
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
    transform: TransformSettings | None = Field(
        None,
        description="New data and attributes from the event, before it is encoded; "
        "an event it fails on is dead-lettered with the error",
    )

    def rule_name(self, index: int) -> str:
        """The name of this rule at ``index`` in egress: its own, else ``<to>:<index>``."""
        return self.name or f"{self.to}:{index}"


class SchemaEntry(_Model):
    """A JSON Schema the node enforces on the data of events of a CloudEvent type."""

    type: str = Field(
        min_length=1,
        description="CloudEvent type, exactly, or a prefix ending in '*' (com.example.order.*)",
    )
    schema_: str | None = Field(
        None,
        alias="schema",
        min_length=1,
        description="A JSON Schema file (draft 2020-12 or 07); a relative path is taken from "
        "the node's working directory, like data_dir. An event whose dataschema is this "
        "path (as written, absolute, or its file: URI) or the schema's $id is checked too",
    )
    inline: dict[str, Any] | None = Field(None, description="The JSON Schema itself")
    at: Literal["ingress", "egress"] = Field(
        "ingress",
        description="ingress: an invalid event is refused where it enters (HTTP 400, else "
        "dead-lettered); egress: checked as it leaves (after any transform), an invalid one "
        "is dead-lettered from that egress",
    )

    @field_validator("type")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if "*" in v[:-1]:
            raise ValueError(f"{v!r}: '*' may only end a type prefix")
        return v

    @model_validator(mode="after")
    def _one(self) -> SchemaEntry:
        if (self.schema_ is None) == (self.inline is None):
            raise ValueError("give exactly one of schema (a file) and inline")
        return self


class Limits(_Model):
    max_event_size: int = Field(
        256 * 1024, ge=64 * 1024, description="Bytes; the spec asks for at least 64 KiB"
    )
    batch_size: int = Field(256, ge=1, description="Events per peer-link batch")
    link_credit: int = Field(4096, ge=1, description="Events a peer may have in flight to us")
    max_interests_per_peer: int = Field(
        20_000,
        ge=1,
        description="Interests kept from one peer; more are refused, counted in "
        'mesh_interests_refused_total{reason="limit"}',
    )
    hello_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection to /mesh has for its hello: one deadline, "
        "pings do not extend it",
    )
    max_hello_size: int = Field(
        64 * 1024,
        ge=1024,
        description="Bytes: the largest WebSocket frame a connection to /mesh may send before "
        "its hello is accepted (after it, batches up to 64 MiB); a larger one is refused "
        "before it is read",
    )
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds an HTTP connection has to deliver a complete request head, from "
        "when it opens (and, for keep-alive, from the end of the previous response); a "
        "slower one is closed, counted in mesh_http_refused_total{reason=header_timeout}",
    )
    http_body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a POST /events body has to arrive; a slower one gets 408, counted "
        "in mesh_http_refused_total{reason=body_timeout}",
    )
    max_pending_connections: int = Field(
        256,
        ge=1,
        description="HTTP connections waiting for their first request head at once; a new one "
        "beyond it is closed at once, counted in mesh_http_refused_total{reason=busy}",
    )
    max_pending_hellos: int = Field(
        16,
        ge=1,
        description="Connections to /mesh that have not finished their hello yet; "
        "more are answered 503 before the WebSocket upgrade",
    )
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


class Tracing(_Model):
    """OpenTelemetry spans (receive, process, send) for events that carry a trace context.

    Needs ``opentelemetry-sdk`` (``pip install 'event-mesh-gateway[tracing]'``);
    ``otlp`` also needs ``opentelemetry-exporter-otlp-proto-http``.
    """

    exporter: Literal["otlp", "console", "file"] = Field(
        "otlp", description="otlp: OTLP over HTTP to endpoint; console: stderr; file: JSON lines"
    )
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="The OTLP/HTTP traces endpoint (otlp)"
    )
    path: Path | None = Field(None, description="Where spans are written, one JSON per line (file)")
    service_name: str = Field("event-mesh-gateway", description="service.name of the spans")

    @model_validator(mode="after")
    def _file_needs_path(self) -> Tracing:
        if self.exporter == "file" and self.path is None:
            raise ValueError("exporter file needs a path")
        return self


class Logging(_Model):
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line; json: one JSON object per line"
    )
    level: Literal["debug", "info", "warning", "error"] = Field("info")


class DeadLetters(_Model):
    """Bounds of the dead-letter queue; the oldest entries beyond them are evicted, counted."""

    max_bytes: int = Field(
        256 << 20,
        ge=0,
        description="Bytes of dead letters kept (records and their descriptions); "
        "the oldest beyond it are evicted (0: unbounded)",
    )
    max_age: float = Field(
        30 * 86400,
        ge=0,
        description="Seconds a dead letter is kept; older ones are evicted (0: forever)",
    )


Scope = Literal["publish", "read", "admin"]


class ApiToken(_Model):
    """A bearer token and what it may do."""

    token: SecretStr = Field(
        description="Sent as 'Authorization: Bearer <token>'; write it as ${VAR}, never literally",
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description="publish: POST /events/<topic>; read: GET /api/*; "
        "admin: changes under /api (reload, dead-letter redrive and purge, egress resume)",
    )

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v


class ApiSettings(_Model):
    """Who may use HTTP ingress and the admin API."""

    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Bearer tokens with their scopes. None: only clients on the node's own "
        "host (loopback) may use /events and /api",
    )


# A plain model, not a pydantic-settings one: mesh.config.loader merges the
# MESH_ environment overrides into the file's data before validation, so they
# pass the same checks as the file. (The docstring is the schema's description.)
class MeshConfig(_Model):
    """A node's configuration file."""

    node: NodeSettings
    brokers: dict[str, BrokerModel] = Field(default_factory=dict)
    peers: list[Peer] = Field(default_factory=list)
    accept: list[AcceptPeer] = Field(
        default_factory=list, description="Nodes allowed to dial this one, with their tokens"
    )
    ingress: list[IngressRule] = Field(default_factory=list)
    egress: list[EgressRule] = Field(default_factory=list)
    schemas: list[SchemaEntry] = Field(
        default_factory=list,
        description="JSON Schemas checked on events' data, by CloudEvent type",
    )
    limits: Limits = Field(default_factory=Limits)
    outbox: OutboxSettings = Field(
        default_factory=OutboxSettings, description="Default bounds of every outbox"
    )
    storage: Storage = Field(default_factory=Storage)
    dlq: DeadLetters = Field(
        default_factory=DeadLetters, description="Bounds of the dead-letter queue"
    )
    api: ApiSettings = Field(
        default_factory=ApiSettings, description="Tokens for HTTP ingress and the admin API"
    )
    tracing: Tracing | None = Field(
        None, description="Emit OpenTelemetry spans; default: none (trace context still travels)"
    )
    logging: Logging = Field(default_factory=Logging, description="Log format and level")
