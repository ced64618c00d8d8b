"""An AsyncAPI 3.0.0 document of one node, built from its configuration and routing table.

Pure: :func:`build_document` takes the configuration, the routes of the
routing table and a :class:`BrokerDoc` per broker (what the broker's bridge
says about its protocol, from ``BridgeSpec.asyncapi``) and returns a
JSON-ready dict. The node serves it at ``GET /api/asyncapi``.

What the document holds, from this node's point of view:

- ``servers``: every local broker (protocol and host, never credentials) and
  the node's own listener as the peer endpoint (``ws``/``wss`` at ``/mesh``);
  a broker served by the listener itself (HTTP ingress) is the listener, its
  channels the request paths (``/events/<topic>``); webhook hosts are servers;
- ``channels``: each ingress topic and each egress target, wildcards and
  template fields as ``{name}`` address parameters; and each mesh-topic
  pattern of a remote interest;
- ``operations``: ``receive`` per ingress rule, ``send`` per egress rule, and
  ``send`` per remote interest (what events from here reach elsewhere), with
  the bridges' operation bindings (MQTT qos/retain, NATS queue, HTTP method)
  and the filter (``x-filter``, ``x-cesql-filter``) and dead-letter policy
  (``x-dlq``) as extensions;
- ``components.messages``: one per CloudEvent type configured (literal
  ingress ``event.type`` templates, ``exact``/``prefix`` type filters) or seen
  (``seen_types``), plus ``CloudEvent`` for events of any type; the
  CloudEvents context attributes as headers and the type's JSON Schema, when
  one is configured, as payload.

Every ``$ref`` in the document points inside it: a schema's own internal
references are rewritten to where the schema sits in ``components.schemas``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mesh import __version__
from mesh.core.filters import canonical
from mesh.core.secrets import mask_url_credentials
from mesh.core.topics import MESH_SYNTAX, TopicSyntax

if TYPE_CHECKING:
    from mesh.config.models import MeshConfig
    from mesh.core.routing import RouteInfo

__all__ = ["ASYNCAPI_VERSION", "BrokerDoc", "build_document", "server_host"]

ASYNCAPI_VERSION = "3.0.0"
ANY_TYPE = "CloudEvent"
CONTEXT_SCHEMA = "CloudEventContext"


def _no_bindings(rule: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class BrokerDoc:
    """How the document describes one configured broker; a bridge's spec makes it.

    ``host`` None: the broker is served by the node's own listener (HTTP
    ingress), its channels at ``pathname``/<topic>. ``webhooks``: egress targets are URLs, whose
    scheme and host become servers. ``bindings`` gives the operation bindings
    object of an ingress or egress rule, only where the official schema
    defines them (e.g. ``{"mqtt": {"qos": 1, "bindingVersion": "0.2.0"}}``).
    """

    protocol: str
    syntax: TopicSyntax = MESH_SYNTAX
    host: str | None = None
    pathname: str | None = None
    protocol_version: str | None = None
    webhooks: bool = False
    bindings: Callable[[Any], dict[str, Any]] = _no_bindings


def server_host(url: str) -> str:
    """``host[:port]`` of a URL, without user name or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_TEMPLATE_VAR = re.compile(r"\{\{|\}\}|\{([^}]*)\}")

# The context attributes of CloudEvents 1.0 (binary mode carries them as headers:
# ce-<name> over HTTP and NATS, user properties over MQTT 5).
_CONTEXT: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 context attributes; in binary mode they are the "
    "message's headers (HTTP and NATS: ce-<name>; MQTT 5: user properties <name>), "
    "in structured mode members of the application/cloudevents+json body",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "format": "uri-reference", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string", "format": "uri"},
        "traceparent": {"type": "string", "description": "W3C trace context"},
    },
}


def _safe_id(text: str) -> str:
    return _ID_UNSAFE.sub("_", text) or "_"


class _Doc:
    """The document under construction: ids are unique and every reference is kept."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self.servers: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {CONTEXT_SCHEMA: _CONTEXT}
        self._type_schemas = dict(schemas)

    def unique(self, table: Mapping[str, Any], base: str) -> str:
        key = _safe_id(base)
        n = 2
        while key in table:
            key = f"{_safe_id(base)}-{n}"
            n += 1
        return key

    # messages -----------------------------------------------------------------
    def message(self, type_: str | None, prefix: bool = False, mode: str = "binary") -> str:
        """The id of the component message for a type (None: any type) in a content mode.

        binary: the context attributes are headers, the data the payload;
        structured: the payload is the whole event (application/cloudevents+json);
        data: the payload is the data alone, without attributes.
        """
        base = ANY_TYPE if type_ is None else _safe_id(type_) + (".prefix" if prefix else "")
        key = base if mode == "binary" else f"{base}.{mode}"
        if key in self.messages:
            return key
        context: dict[str, Any] = {"$ref": f"#/components/schemas/{CONTEXT_SCHEMA}"}
        if type_ is None:
            msg: dict[str, Any] = {
                "name": ANY_TYPE,
                "title": "Any CloudEvent",
                "summary": "A CloudEvent of any type",
            }
        else:
            constraint = {"pattern": "^" + re.escape(type_)} if prefix else {"const": type_}
            context = {
                "allOf": [
                    context,
                    {"type": "object", "properties": {"type": {"type": "string", **constraint}}},
                ]
            }
            msg = {
                "name": type_,
                "title": f"{type_}*" if prefix else type_,
                "summary": f"CloudEvents whose type starts with {type_}"
                if prefix
                else f"CloudEvent {type_}",
            }
        data = self._payload(type_, prefix)
        if mode == "structured":
            msg["title"] += " (structured)"
            msg["contentType"] = "application/cloudevents+json"
            msg["payload"] = (
                context
                if data is None
                else {
                    "allOf": [context, {"type": "object", "properties": {"data": {"$ref": data}}}]
                }
            )
        elif mode == "data":
            msg["title"] += " (data only)"
            msg["summary"] += ": its data alone, without the CloudEvents attributes"
            if data is not None:
                msg["payload"] = {"$ref": data}
        else:
            msg["headers"] = context
            if data is not None:
                msg["payload"] = {"$ref": data}
        self.messages[key] = msg
        return key

    def _payload(self, type_: str | None, prefix: bool) -> str | None:
        """A reference to the JSON Schema of a type's data, if one is configured."""
        if type_ is None:
            return None
        wanted = f"{type_}*" if prefix else type_
        found = next((k for k in self._type_schemas if k == wanted), None)
        if found is None and not prefix:
            found = max(
                (k for k in self._type_schemas if k.endswith("*") and type_.startswith(k[:-1])),
                key=len,
                default=None,
            )
        if found is None:
            return None
        key = _safe_id(found.replace("*", "_prefix"))
        if key not in self.schemas:
            where = f"#/components/schemas/{key}"
            self.schemas[key] = _rebase(self._type_schemas[found], where)
        return f"#/components/schemas/{key}"

    # channels and operations --------------------------------------------------
    def channel(
        self,
        base: str,
        address: str,
        parameters: Mapping[str, str],
        messages: list[str],
        servers: list[str],
        **extra: Any,
    ) -> str:
        cid = self.unique(self.channels, base)
        ch: dict[str, Any] = {"address": address}
        ch.update({k: v for k, v in extra.items() if v is not None})
        if parameters:
            ch["parameters"] = {n: {"description": d} for n, d in parameters.items()}
        ch["messages"] = {m: {"$ref": f"#/components/messages/{m}"} for m in messages}
        if servers:
            ch["servers"] = [{"$ref": f"#/servers/{s}"} for s in servers]
        self.channels[cid] = ch
        return cid

    def operation(
        self, base: str, action: str, channel: str, bindings: Mapping[str, Any], **extra: Any
    ) -> str:
        oid = self.unique(self.operations, base)
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{m}"}
                for m in self.channels[channel]["messages"]
            ],
        }
        op.update({k: v for k, v in extra.items() if v is not None})
        if bindings:
            op["bindings"] = dict(bindings)
        self.operations[oid] = op
        return oid


def _rebase(schema: Any, where: str) -> Any:
    """``schema`` with its document-internal ``$ref`` s (``#/...``) pointing below ``where``."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for k, v in schema.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                out[k] = where + v[1:]
            else:
                out[k] = _rebase(v, where)
        return out
    if isinstance(schema, list):
        return [_rebase(v, where) for v in schema]
    return schema


def _pattern_address(mesh_pattern: str, syntax: TopicSyntax) -> tuple[str, dict[str, str]]:
    """A mesh-syntax pattern as a channel address in ``syntax``, wildcards as parameters."""
    levels = mesh_pattern.split("/")
    params: dict[str, str] = {}
    out: list[str] = []
    for lvl in levels:
        if lvl == "+":
            name = str(len(params) + 1)
            params[name] = f"wildcard {name}: one level ({syntax.one} in {syntax.name} syntax)"
            out.append(f"{{{name}}}")
        elif lvl == "#":
            name = str(len(params) + 1)
            params[name] = (
                f"wildcard {name}: the remaining levels, zero or more "
                f"({syntax.rest} in {syntax.name} syntax)"
            )
            out.append(f"{{{name}}}")
        else:
            out.append(lvl)
    return syntax.separator.join(out), params


def _template_address(template: str, pattern: str) -> tuple[str, dict[str, str]]:
    """A target template as a channel address: every ``{field}`` is a parameter."""
    params: dict[str, str] = {}

    def param(m: re.Match[str]) -> str:
        if m[1] is None:  # {{ or }}: a literal brace
            return m[0][0]
        var = m[1].strip()
        name = _safe_id(var).replace(".", "_")
        if var.isdigit():
            params[name] = f"wildcard {var} of the mesh-topic pattern {pattern}"
        elif var == "node":
            params[name] = "the id of the node where the event entered the mesh"
        elif var == "topic":
            params[name] = "the event's mesh topic"
        elif var.startswith("data."):
            params[name] = f"the field {var[5:]} of the event's JSON data"
        else:
            params[name] = f"the event's {var} attribute"
        return f"{{{name}}}"

    return _TEMPLATE_VAR.sub(param, template), params


def _filter_types(spec: Any) -> list[tuple[str, bool]]:
    """The CloudEvent types a filter admits, as (type, is_prefix); [] when not known."""
    if isinstance(spec, list):
        return _narrow([_filter_types(item) for item in spec])
    if not isinstance(spec, dict) or len(spec) != 1:
        return []
    ((dialect, value),) = spec.items()
    if dialect in ("exact", "prefix") and isinstance(value, dict):
        t = value.get("type")
        return [(t, dialect == "prefix")] if isinstance(t, str) else []
    if dialect == "any" and isinstance(value, list):
        found = [_filter_types(v) for v in value]
        if not all(found):  # a branch of any type: any type
            return []
        return list(dict.fromkeys(t for ts in found for t in ts))
    if dialect == "all" and isinstance(value, list):
        return _narrow([_filter_types(v) for v in value])
    return []


def _narrow(groups: list[list[tuple[str, bool]]]) -> list[tuple[str, bool]]:
    """The types every one of ``groups`` admits (the filters are AND-ed)."""
    groups = [g for g in groups if g]  # a filter not on the type admits every type

    def admits(group: list[tuple[str, bool]], t: str) -> bool:
        return any(t.startswith(g) if p else t == g for g, p in group)

    candidates = list(dict.fromkeys(t for g in groups for t in g))
    exact = [t for t, p in candidates if not p and all(admits(g, t) for g in groups)]
    if exact:
        return [(t, False) for t in exact]
    prefixes = [t for t, p in candidates if p and all(admits(g, t) for g in groups)]
    return [(max(prefixes, key=len), True)] if prefixes else []


def _sql(spec: Any) -> list[str]:
    """The CESQL expressions in a filter."""
    if isinstance(spec, list):
        return [e for item in spec for e in _sql(item)]
    if not isinstance(spec, dict):
        return []
    out: list[str] = []
    for dialect, value in spec.items():
        if dialect == "sql" and isinstance(value, str):
            out.append(value)
        elif dialect in ("any", "all", "not"):
            out += _sql(value)
    return out


def _filter_extensions(spec: Any) -> dict[str, Any]:
    if spec is None:
        return {}
    out: dict[str, Any] = {"x-filter": spec}
    sql = _sql(spec)
    if sql:
        out["x-cesql-filter"] = sql[0] if len(sql) == 1 else sql
    return out


def _messages(doc: _Doc, types: list[tuple[str, bool]], mode: str = "binary") -> list[str]:
    if not types:
        return [doc.message(None, mode=mode)]
    return list(dict.fromkeys(doc.message(t, p, mode) for t, p in types))


def build_document(
    config: MeshConfig,
    routes: Iterable[RouteInfo],
    *,
    brokers: Mapping[str, BrokerDoc],
    listen: str,
    tls: bool = False,
    schemas: Mapping[str, Any] | None = None,
    seen_types: Iterable[str] = (),
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the node ``config`` describes.

    ``listen``: the host:port the node serves on (its bound port); ``tls``:
    whether it serves TLS. ``schemas``: CloudEvent type (or prefix ending in
    ``*``) to the JSON Schema of its data. ``seen_types``: types the node saw
    go by (a catalog may feed it), listed as messages beside the configured ones.
    """
    node = config.node
    doc = _Doc(schemas or {})

    peer = doc.unique(brokers, "mesh")
    doc.servers[peer] = {
        "host": listen,
        "protocol": "wss" if tls else "ws",
        "pathname": "/mesh",
        "title": f"{node.id}: peer links",
        "description": "Where peer nodes link to this node (WebSocket): interests, "
        "batches of events, acknowledgements",
    }
    for name, b in brokers.items():
        server: dict[str, Any] = {
            "host": b.host if b.host is not None else listen,
            "protocol": b.protocol,
            "title": f"broker {name}",
        }
        if b.host is None:
            server["protocol"] = "https" if tls else "http"
            server["description"] = (
                f"HTTP ingress on this node: POST {b.pathname or ''}/<topic> "
                "(the channel addresses are the request paths)"
            )
        elif b.pathname:
            server["pathname"] = b.pathname
        if b.protocol_version:
            server["protocolVersion"] = b.protocol_version
        doc.servers[name] = server

    for i, ingress in enumerate(config.ingress):
        b = brokers[ingress.from_]
        mesh_pattern = b.syntax.to_mesh(ingress.topic)
        address, params = _pattern_address(mesh_pattern, b.syntax)
        if b.host is None:  # served by the listener: the request path
            address = f"{b.pathname or ''}/{address}"
        tmpl = ingress.event
        types: list[tuple[str, bool]] = []
        if tmpl is not None and "{" not in tmpl.type:
            types = [(tmpl.type, False)]
        messages = _messages(doc, types)
        if tmpl is not None and "{" not in tmpl.type:
            # Raw payloads get this type; CloudEvents arriving here keep their own.
            messages.append(doc.message(None))
        cid = doc.channel(
            f"{ingress.from_}.in.{i}",
            address,
            params,
            messages,
            [ingress.from_],
            title=f"ingress[{i}] from {ingress.from_}",
            description=f"{ingress.topic} on broker {ingress.from_}, entering the mesh as "
            f"{ingress.mesh_topic or mesh_pattern}",
        )
        extra: dict[str, Any] = {"x-mesh-topic": ingress.mesh_topic or mesh_pattern}
        if tmpl is not None:
            extra["x-cloudevent-template"] = tmpl.model_dump(exclude_none=True, mode="json")
        if ingress.queue_group is not None:
            extra["x-queue-group"] = ingress.queue_group
        doc.operation(
            f"receive.{ingress.from_}.{i}",
            "receive",
            cid,
            b.bindings(ingress),
            summary=f"ingress[{i}]: {ingress.topic} from {ingress.from_} into the mesh",
            **extra,
        )

    webhook_servers: dict[tuple[str, str], str] = {}
    for i, egress in enumerate(config.egress):
        b = brokers[egress.to]
        name = egress.rule_name(i)
        target = mask_url_credentials(egress.target)
        servers = [egress.to] if egress.to in doc.servers else []
        if b.webhooks:
            parts = urlsplit(target)
            servers = []
            if parts.scheme and parts.netloc and "{" not in parts.netloc:
                key = (parts.scheme, server_host(target))
                if key not in webhook_servers:
                    sid = doc.unique(doc.servers, f"{egress.to}.{key[1]}")
                    doc.servers[sid] = {
                        "host": key[1],
                        "protocol": parts.scheme,
                        "title": f"webhooks of broker {egress.to}",
                    }
                    webhook_servers[key] = sid
                servers = [webhook_servers[key]]
                target = parts.path + (f"?{parts.query}" if parts.query else "")
        address, params = _template_address(target, egress.topic)
        messages = _messages(doc, _filter_types(egress.filter), egress.mode)
        cid = doc.channel(
            f"{egress.to}.out.{name}",
            address,
            params,
            messages,
            servers,
            title=f"egress {name} to {egress.to}",
            description=f"events on mesh topics {egress.topic} delivered to broker "
            f"{egress.to} in {egress.mode} mode",
        )
        on_error = egress.on_error
        doc.operation(
            f"send.{name}",
            "send",
            cid,
            b.bindings(egress),
            summary=f"egress {name}: mesh topics {egress.topic} to {egress.to}",
            **{
                "x-mesh-topic": egress.topic,
                "x-mode": egress.mode,
                **_filter_extensions(egress.filter),
                "x-dlq": {
                    "then": on_error.then,
                    "retry": on_error.retry.model_dump(mode="json"),
                },
            },
        )

    remote = sorted(
        (r for r in routes if r.origin != node.id),
        key=lambda r: (r.origin, r.pattern, "" if r.filter is None else canonical(r.filter)),
    )
    for r in remote:
        address, params = _pattern_address(r.pattern, MESH_SYNTAX)
        cid = doc.channel(
            f"mesh.{r.origin}.{r.pattern.replace('/', '.')}",
            address,
            params,
            _messages(doc, _filter_types(r.filter)),
            [peer],
            title=f"interest of {r.origin}",
            description=f"mesh topics {r.pattern} wanted by node {r.origin}, "
            f"reached through {r.next_hop}",
        )
        doc.operation(
            f"send.mesh.{r.origin}",
            "send",
            cid,
            {},
            summary=f"events from here on {r.pattern} reach {r.origin} via {r.next_hop}",
            **{
                "x-origin": r.origin,
                "x-next-hop": r.next_hop,
                "x-path": list(r.path),
                "x-reachable": r.reachable,
                **_filter_extensions(r.filter),
            },
        )

    for t in seen_types:
        doc.message(t)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:event-mesh:node:{node.id}",
        "info": {
            "title": f"Event mesh node {node.id}",
            "version": __version__,
            "description": f"The events node {node.id} (region {node.region}) takes in from "
            "its local brokers, delivers to them, and sends on to the mesh; generated "
            "from its running configuration and routing table.",
            "x-node": node.id,
            "x-region": node.region,
        },
        "defaultContentType": "application/json",
        "servers": doc.servers,
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {"messages": doc.messages, "schemas": doc.schemas},
    }
