"""The node as the HTTP API sees it: :class:`mesh.api.protocol.NodeApi` over a Node."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from mesh.api.auth import Grant, grants
from mesh.core.asyncapi import BrokerDoc, build_document
from mesh.core.envelope import Envelope, decode_record
from mesh.core.errors import EventTooLarge, InvalidRequest, MeshError
from mesh.core.event import Event, now_rfc3339
from mesh.core.secrets import mask_url_credentials
from mesh.core.topics import Pattern, TopicError
from mesh.runtime.store import DeadLetter
from mesh.runtime.tail import TailSubscription

if TYPE_CHECKING:
    from mesh.runtime.node import Node

__all__ = ["NodeAdmin"]

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


class NodeAdmin:
    """Answers the admin API from a node's state."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._grants: tuple[object, tuple[Grant, ...]] = (None, ())

    def api_grants(self) -> Sequence[Grant]:
        # Digests are made once per configuration; a reload replaces config.api.
        api = self.node.config.api
        if self._grants[0] is not api:
            pairs = ((t.token.get_secret_value(), t.scopes) for t in api.tokens)
            self._grants = (api, grants(pairs))
        return self._grants[1]

    def api_refused(self, remote: str, status: int, where: str, detail: str) -> None:
        self.node.metrics.inc("mesh_api_refused_total", status=str(status), path=where)
        # One fault key for every client, so many addresses cannot grow the table.
        self.node.faults.report(
            "api", MeshError(f"{status} for {remote} on {where}: {detail}"), what="refused"
        )

    def health(self) -> dict[str, Any]:
        n = self.node
        return {
            "node": n.node_id,
            "region": n.region,
            "status": "ok",
            "uptime": round(time.time() - n.started, 3),
        }

    def stats(self) -> dict[str, Any]:
        return self.node.stats()

    def readiness(self) -> dict[str, Any]:
        reasons = self.node.readiness()
        return {"ready": not reasons, "node": self.node.node_id, "reasons": reasons}

    async def status(self) -> dict[str, Any]:
        out = self.node.status()
        out["dead_letters"] = await self.node.store.dlq_count()
        return out

    def routes(self) -> dict[str, Any]:
        """One row per route: this node's egress rules (with their names), then the
        routes learned from peers (with the peer each came from)."""
        n = self.node
        now = time.time()
        rows: list[dict[str, Any]] = [
            {
                "pattern": rule.pattern.text,
                "filter": rule.filter,
                "origin": n.node_id,
                "next_hop": None,
                "path": [n.node_id],
                "age": None,
                "reachable": True,
                "rule": rule.name,
                "index": rule.index,
            }
            for rule in n.egress
        ]
        rows += [
            {
                "pattern": r.pattern,
                "filter": r.filter,
                "origin": r.origin,
                "next_hop": r.next_hop,
                "path": list(r.path),
                "age": round(now - r.since, 3) if r.since else None,
                "reachable": r.reachable,
                "rule": None,
                "index": None,
            }
            for r in n.table.routes()
            if r.origin != n.node_id  # this node's own rows are the rules above
        ]
        return {"node": n.node_id, "routes": rows}

    def peers(self) -> dict[str, Any]:
        return {"node": self.node.node_id, "peers": self.node.peers()}

    async def asyncapi(self) -> dict[str, Any]:
        n = self.node
        config = n.config
        schemas = n.schemas.documents()
        brokers: dict[str, BrokerDoc] = {}
        for name, cfg in config.brokers.items():
            spec = n.specs[cfg.kind]
            doc = spec.asyncapi(cfg) if spec.asyncapi is not None else None
            brokers[name] = doc or BrokerDoc(
                protocol=cfg.kind, syntax=spec.syntax, host="localhost"
            )
        # The listen address as configured (0.0.0.0: every interface), with the bound port.
        host = config.node.host
        return build_document(
            config,
            n.table.routes(),
            brokers=brokers,
            listen=f"[{host}]:{n.port}" if ":" in host else f"{host}:{n.port}",
            tls=config.node.tls is not None,
            schemas=schemas,
            seen_types=n.catalog.types(),  # beside the types its rules name
        )

    async def catalog(self) -> dict[str, Any]:
        n = self.node
        schemas = n.schemas.documents()
        return {"node": n.node_id, "events": n.catalog.view(n.table.routes(), schemas)}

    def egress(self) -> dict[str, Any]:
        return {
            "node": self.node.node_id,
            "egress": [
                {
                    "index": w.rule.index,
                    "to": w.rule.broker,
                    "topic": w.rule.pattern.text,
                    "target": mask_url_credentials(w.rule.target.source),
                    "mode": w.rule.mode,
                    "outbox": w.outbox.depth,
                    "paused": w.paused,
                }
                for w in self.node.egress_workers()
            ],
        }

    def resume_egress(self, index: int) -> bool | None:
        for w in self.node.egress_workers():
            if w.rule.index == index:
                was = w.paused
                w.resume()
                return was is not None
        return None

    def tail(self, pattern: str, filter_spec: Any) -> TailSubscription:
        return self.node.router.tail.subscribe(pattern, filter_spec)

    async def publish(self, body: Any) -> dict[str, Any]:
        """Build a test CloudEvent from ``body`` and route it as this node's own."""
        n = self.node
        if not isinstance(body, dict):
            raise InvalidRequest("body", "must be a JSON object with topic and data")
        unknown = sorted(set(body) - {"topic", "data", "type", "source", "id"})
        if unknown:
            raise InvalidRequest(unknown[0], "unknown member; known: topic, data, type, source, id")
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic:
            raise InvalidRequest("topic", "a mesh topic (levels separated by '/') is required")
        try:
            literal = Pattern.compile(topic).is_literal
        except TopicError as exc:
            raise InvalidRequest("topic", exc.reason) from None
        if not literal:
            raise InvalidRequest("topic", f"{topic!r} is a pattern; give a concrete topic")
        attrs: dict[str, Any] = {}
        for name, default in (
            ("type", "dev.mesh.test"),
            ("source", f"/mesh/{n.node_id}/cli"),
            ("id", str(uuid.uuid4())),
        ):
            value = body.get(name, default)
            if not isinstance(value, str) or not value:
                raise InvalidRequest(name, "must be a non-empty string")
            attrs[name] = value
        data: bytes | None = None
        extra: dict[str, Any] = {"time": now_rfc3339()}
        if "data" in body:
            if isinstance(body["data"], str):
                data = body["data"].encode("utf-8")
                extra["datacontenttype"] = "text/plain; charset=utf-8"
            else:
                data = orjson.dumps(body["data"])
                extra["datacontenttype"] = "application/json"
        event = Event.create(attrs["type"], attrs["source"], data, id=attrs["id"], **extra)
        if event.size() > n.limits.max_event_size:
            raise EventTooLarge(event.size(), n.limits.max_event_size)
        routed = await n.router.route([Envelope(event, topic, n.node_id)])
        return {"id": event.id, "topic": topic, "routed": routed}

    def metrics_text(self) -> str:
        return self.node.metrics.prometheus()

    async def reload(self) -> dict[str, Any]:
        n = self.node
        await n.reload_from_source()
        return {
            "node": n.node_id,
            "reloaded": True,
            "egress": len(n.egress),
            "peers": len(n.config.peers),
        }

    async def dead_letters(self, limit: int, after: int) -> dict[str, Any]:
        store = self.node.store
        entries = await store.dead_letters(limit=limit, after=after)
        return {
            "node": self.node.node_id,
            "total": await store.dlq_count(),
            "entries": [_dead_letter_json(e) for e in entries],
        }

    async def dead_letter(self, entry_id: int) -> dict[str, Any] | None:
        entries = await self.node.store.dead_letters(ids=[entry_id])
        return _dead_letter_json(entries[0], full=True) if entries else None

    async def redrive(self, ids: list[int] | None) -> tuple[list[int], list[dict[str, Any]]]:
        return await self.node.redrive(ids)

    async def purge_dead_letters(self) -> int:
        return await self.node.store.dlq_delete()


def _dead_letter_json(e: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "time": e.ts,
        "reason": e.reason,
        "place": e.place,
        "kind": e.kind,
    }
    if e.kind == "event":
        try:
            env = decode_record(e.record)
            out["event"] = {
                "id": env.event.attrs.get("id"),
                "source": env.event.attrs.get("source"),
                "type": env.event.attrs.get("type"),
                "topic": env.topic,
                "origin": env.origin,
            }
            if full:
                out["event"]["attributes"] = env.event.attrs
                out["event"]["data_base64"] = base64.b64encode(env.event.data or b"").decode()
        except MeshError:
            out["event"] = None
    else:
        out["message"] = dict(e.meta)
        if full:
            out["message"]["payload_base64"] = base64.b64encode(e.record).decode()
    return out
