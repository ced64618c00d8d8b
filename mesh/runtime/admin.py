"""The node as the HTTP API sees it: :class:`mesh.api.protocol.NodeApi` over a Node."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.api.auth import Grant, grants
from mesh.core.envelope import decode_record
from mesh.core.errors import MeshError
from mesh.core.secrets import mask_url_credentials
from mesh.runtime.store import DeadLetter

if TYPE_CHECKING:
    from mesh.runtime.node import Node

__all__ = ["NodeAdmin"]

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

    async def status(self) -> dict[str, Any]:
        out = self.node.status()
        out["dead_letters"] = await self.node.store.dlq_count()
        return out

    def routes(self) -> dict[str, Any]:
        n = self.node
        now = time.time()
        rows = [
            {
                "pattern": r.pattern,
                "filter": r.filter,
                "origin": r.origin,
                "next_hop": r.next_hop,
                "path": list(r.path),
                "age": round(now - r.since, 3) if r.since else None,
                "reachable": r.reachable,
            }
            for r in n.table.routes()
        ]
        return {"node": n.node_id, "routes": rows}

    def peers(self) -> dict[str, Any]:
        return {"node": self.node.node_id, "peers": self.node.peers()}

    async def catalog(self) -> dict[str, Any]:
        n = self.node
        schemas = await asyncio.to_thread(_schemas, n.config, n.source)
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


def _schemas(config: object, source: str | None) -> dict[str, Any]:
    """The configured schemas by type (or ``prefix*``), as JSON documents when readable.

    ``schemas:`` may not exist in this configuration (it arrives with schema
    validation): read defensively, and a file that cannot be read is left out.
    """
    out: dict[str, Any] = {}
    base = Path(source).parent if source else Path.cwd()
    for entry in getattr(config, "schemas", None) or []:
        type_ = getattr(entry, "type", None)
        if not isinstance(type_, str):
            continue
        doc = getattr(entry, "inline", None)
        path = getattr(entry, "schema", None)
        if doc is None and isinstance(path, str | Path):
            file = Path(path) if Path(path).is_absolute() else base / path
            try:
                doc = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.debug("catalog: schema %s for %s not readable: %s", file, type_, exc)
                continue
        if isinstance(doc, dict):
            out[type_] = doc
    return out
