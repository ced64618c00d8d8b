"""The node's one HTTP server: peer links, HTTP ingress and the admin API.

- ``GET /mesh`` — peer links (WebSocket), see :mod:`mesh.runtime.link`;
- ``POST /events/<topic>`` — HTTP ingress in any CloudEvents HTTP mode, or a
  raw payload wrapped by the matching ingress rule. ``202`` once every event
  is durable; ``400`` with an RFC 9457 problem body naming the fault; a batch
  with some bad events answers ``207`` listing accepted and rejected ones;
- ``GET /api/health``, ``/api/stats``, ``/api/routes``, ``/api/peers`` — JSON;
- ``POST /api/reload`` — re-read the configuration file (from loopback only);
- ``GET /api/dlq``, ``GET /api/dlq/<id>``, ``POST /api/dlq/redrive``,
  ``POST /api/dlq/<id>/redrive``, ``DELETE /api/dlq`` — the dead-letter queue
  (changes from loopback only);
- ``GET /api/egress``, ``POST /api/egress/<i>/resume`` — egress workers, and
  resuming one paused by ``on_error.then: pause``;
- ``GET /metrics`` — Prometheus text.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from mesh.core.envelope import decode_record
from mesh.core.errors import Backpressure, ConfigErrors, MeshError, StoreError
from mesh.runtime.link import accept_link
from mesh.runtime.store import DeadLetter

if TYPE_CHECKING:
    from mesh.runtime.node import Node

__all__ = ["build_app"]

NODE_KEY: web.AppKey[Node] = web.AppKey("node")


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
    )


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An RFC 9457 problem response; ``extra`` members go into the body."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


async def _mesh(request: web.Request) -> web.StreamResponse:
    return await accept_link(request.app[NODE_KEY], request)


async def _events(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    topic = request.match_info["topic"]
    brokers = [name for name, b in node.config.brokers.items() if b.kind == "http"]
    broker = next((b for b in brokers if node.ingress.match(b, topic)), None)
    if broker is None:
        return problem(404, "No ingress rule", f"no HTTP ingress rule matches topic {topic!r}")
    limit = node.config.limits.max_event_size
    if request.content_length is not None and request.content_length > limit * 64:
        return problem(
            413,
            "Request too large",
            f"request of {request.content_length} bytes exceeds {limit * 64} bytes",
        )
    body = await request.read()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        accepted, rejected = await node.ingress.accept_http(broker, topic, headers, body)
    except Backpressure as exc:
        return problem(
            503,
            "Outbox full",
            f"not accepting events: {exc}",
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        )
    except StoreError as exc:
        return problem(
            503,
            "Not stored",
            f"the event could not be made durable: {exc}",
            headers={"Retry-After": "1"},
        )
    ids = [e.event.id for e in accepted]
    if rejected and not accepted:
        first = rejected[0]
        status = 413 if "exceeds the limit" in first.reason else 400
        return problem(
            status,
            "Invalid event",
            first.reason,
            errors=[{"index": r.index, "reason": r.reason} for r in rejected],
        )
    if rejected:
        return _json(
            {
                "accepted": ids,
                "rejected": [{"index": r.index, "reason": r.reason} for r in rejected],
            },
            status=207,
        )
    return _json({"accepted": ids}, status=202)


async def _health(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return _json(
        {
            "node": node.node_id,
            "region": node.config.node.region,
            "status": "ok",
            "uptime": round(time.time() - node.started, 3),
        }
    )


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[NODE_KEY].stats())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[NODE_KEY].metrics.prometheus(), content_type="text/plain", charset="utf-8"
    )


async def _routes(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
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
        for r in node.table.routes()
    ]
    return _json({"node": node.node_id, "routes": rows})


async def _reload(request: web.Request) -> web.Response:
    if not _is_loopback(request):
        return problem(403, "Forbidden", "reload is only accepted from the node's own host")
    node = request.app[NODE_KEY]
    try:
        await node.reload_from_source()
    except ConfigErrors as exc:
        return problem(400, "Invalid configuration", str(exc), errors=[str(e) for e in exc.errors])
    except MeshError as exc:
        return problem(409, "Cannot reload", str(exc))
    return _json(
        {
            "node": node.node_id,
            "reloaded": True,
            "egress": len(node.egress),
            "peers": len(node.config.peers),
        }
    )


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


async def _dlq_list(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        limit = min(int(request.query.get("limit", "100")), 10_000)
        after = int(request.query.get("after", "0"))
    except ValueError:
        return problem(400, "Bad request", "limit and after must be integers")
    entries = await node.store.dead_letters(limit=limit, after=after)
    return _json(
        {
            "node": node.node_id,
            "total": await node.store.dlq_count(),
            "entries": [_dead_letter_json(e) for e in entries],
        }
    )


async def _dlq_show(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    entries = await node.store.dead_letters(ids=[int(request.match_info["id"])])
    if not entries:
        return problem(404, "Not found", f"no dead letter {request.match_info['id']}")
    return _json(_dead_letter_json(entries[0], full=True))


async def _dlq_redrive(request: web.Request) -> web.Response:
    if not _is_loopback(request):
        return problem(403, "Forbidden", "redrive is only accepted from the node's own host")
    node = request.app[NODE_KEY]
    which = request.match_info.get("id")
    done, skipped = await node.redrive(None if which is None else [int(which)])
    if which is not None and not done and not skipped:
        return problem(404, "Not found", f"no dead letter {which}")
    return _json({"redriven": done, "skipped": skipped})


async def _dlq_purge(request: web.Request) -> web.Response:
    if not _is_loopback(request):
        return problem(403, "Forbidden", "purge is only accepted from the node's own host")
    node = request.app[NODE_KEY]
    return _json({"purged": await node.store.dlq_delete()})


async def _egress(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return _json(
        {
            "node": node.node_id,
            "egress": [
                {
                    "index": w.rule.index,
                    "to": w.rule.broker,
                    "topic": w.rule.pattern.text,
                    "target": w.rule.target.source,
                    "mode": w.rule.mode,
                    "outbox": w.outbox.depth,
                    "paused": w.paused,
                }
                for w in node.egress_workers()
            ],
        }
    )


async def _egress_resume(request: web.Request) -> web.Response:
    if not _is_loopback(request):
        return problem(403, "Forbidden", "resume is only accepted from the node's own host")
    node = request.app[NODE_KEY]
    index = int(request.match_info["index"])
    for w in node.egress_workers():
        if w.rule.index == index:
            was = w.paused
            w.resume()
            return _json({"index": index, "resumed": was is not None})
    return problem(404, "Not found", f"no egress rule {index}")


def _is_loopback(request: web.Request) -> bool:
    remote = request.remote or ""
    return remote in ("127.0.0.1", "::1") or remote.startswith("127.")


async def _peers(request: web.Request) -> web.Response:
    return _json({"node": request.app[NODE_KEY].node_id, "peers": request.app[NODE_KEY].peers()})


def build_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.limits.max_event_size * 64)
    app[NODE_KEY] = node
    app.router.add_get("/mesh", _mesh)
    app.router.add_post("/events/{topic:.+}", _events)
    app.router.add_get("/api/health", _health)
    app.router.add_get("/api/stats", _stats)
    app.router.add_get("/api/routes", _routes)
    app.router.add_get("/api/peers", _peers)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get("/api/dlq", _dlq_list)
    app.router.add_get("/api/dlq/{id:[0-9]+}", _dlq_show)
    app.router.add_post("/api/dlq/redrive", _dlq_redrive)
    app.router.add_post("/api/dlq/{id:[0-9]+}/redrive", _dlq_redrive)
    app.router.add_delete("/api/dlq", _dlq_purge)
    app.router.add_get("/api/egress", _egress)
    app.router.add_post("/api/egress/{index:[0-9]+}/resume", _egress_resume)
    return app
