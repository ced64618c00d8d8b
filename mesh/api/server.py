"""The node's one HTTP server: peer links, HTTP ingress and the admin API.

Written against :class:`mesh.api.protocol.NodeApi`, never against the node:

- ``GET /`` — the live page (:mod:`mesh.api.page`), drawn from ``/api/status``;
- ``GET /mesh`` — peer links (WebSocket), handed to the link handler;
- ``POST /events/<topic>`` — HTTP ingress, dispatched to the bridges that serve
  it (:class:`mesh.api.ingress.HttpRoutes`);
- ``GET /healthz`` (alias ``/api/health``) — 200 while the process serves;
- ``GET /readyz`` — 200 when every broker is connected, every configured peer
  linked, the store can commit and no outbox is at its bound; else 503 with
  the reasons; ``GET /api/status`` — the same with the state behind it;
- ``GET /api/stats``, ``/api/routes``, ``/api/peers`` — JSON;
- ``GET /api/asyncapi`` — the node's AsyncAPI 3.0.0 document (:mod:`mesh.core.asyncapi`),
  JSON, or YAML with ``?format=yaml`` or ``Accept: application/yaml``;
- ``GET /api/catalog`` — the event catalog (:mod:`mesh.core.catalog`);
- ``POST /api/reload`` — re-read the configuration file;
- ``GET /api/dlq``, ``GET /api/dlq/<id>``, ``POST /api/dlq/redrive``,
  ``POST /api/dlq/<id>/redrive``, ``DELETE /api/dlq`` — the dead-letter queue;
- ``GET /api/egress``, ``POST /api/egress/<i>/resume`` — egress workers, and
  resuming one paused by ``on_error.then: pause``;
- ``GET /api/tail?pattern=P[&filter=JSON]`` — a WebSocket of the live events
  entering the node that match, one JSON text frame each;
- ``POST /api/publish`` — route a test CloudEvent (``mesh publish``);
- ``GET /metrics`` — Prometheus text.

Who may call what (bearer tokens with scopes, else loopback clients only) is
decided for every request in one place, :mod:`mesh.api.auth`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import orjson
import yaml
from aiohttp import WSCloseCode, web

from mesh.api import auth, page
from mesh.api.guard import ConnectionGuard
from mesh.api.ingress import HttpRoutes
from mesh.api.protocol import NodeApi, TailFeed
from mesh.api.responses import json_response, problem
from mesh.core.errors import (
    ConfigErrors,
    EventError,
    FilterError,
    InvalidEvent,
    InvalidRequest,
    MeshError,
    Overloaded,
    TooManyClients,
)
from mesh.core.topics import TopicError

__all__ = ["build_app"]

API_KEY: web.AppKey[NodeApi] = web.AppKey("api")
GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("guard")
TAILS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("tails")
LinkHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _api(request: web.Request) -> NodeApi:
    return request.app[API_KEY]


async def _health(request: web.Request) -> web.Response:
    return json_response(_api(request).health())


async def _ready(request: web.Request) -> web.Response:
    # Open to everyone: the reasons only, computed in memory (no store query).
    body = _api(request).readiness()
    return json_response(body, status=200 if body["ready"] else 503)


async def _status(request: web.Request) -> web.Response:
    return json_response(await _api(request).status())


async def _stats(request: web.Request) -> web.Response:
    return json_response(_api(request).stats())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=_api(request).metrics_text(), content_type="text/plain", charset="utf-8"
    )


async def _routes(request: web.Request) -> web.Response:
    return json_response(_api(request).routes())


async def _peers(request: web.Request) -> web.Response:
    return json_response(_api(request).peers())


async def _asyncapi(request: web.Request) -> web.Response:
    doc = await _api(request).asyncapi()
    accept = request.headers.get("Accept", "")
    if request.query.get("format") == "yaml" or "yaml" in accept:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        return web.Response(text=text, content_type="application/yaml", charset="utf-8")
    return json_response(doc)


async def _catalog(request: web.Request) -> web.Response:
    return json_response(await _api(request).catalog())


async def _reload(request: web.Request) -> web.Response:
    try:
        return json_response(await _api(request).reload())
    except ConfigErrors as exc:
        return problem(400, "Invalid configuration", str(exc), errors=[str(e) for e in exc.errors])
    except MeshError as exc:
        return problem(409, "Cannot reload", str(exc))


async def _dlq_list(request: web.Request) -> web.Response:
    try:
        limit = min(int(request.query.get("limit", "100")), 10_000)
        after = int(request.query.get("after", "0"))
    except ValueError:
        return problem(400, "Bad request", "limit and after must be integers")
    return json_response(await _api(request).dead_letters(limit, after))


async def _dlq_show(request: web.Request) -> web.Response:
    which = request.match_info["id"]
    entry = await _api(request).dead_letter(int(which))
    if entry is None:
        return problem(404, "Not found", f"no dead letter {which}")
    return json_response(entry)


async def _dlq_redrive(request: web.Request) -> web.Response:
    which = request.match_info.get("id")
    done, skipped = await _api(request).redrive(None if which is None else [int(which)])
    if which is not None and not done and not skipped:
        return problem(404, "Not found", f"no dead letter {which}")
    return json_response({"redriven": done, "skipped": skipped})


async def _dlq_purge(request: web.Request) -> web.Response:
    return json_response({"purged": await _api(request).purge_dead_letters()})


async def _egress(request: web.Request) -> web.Response:
    return json_response(_api(request).egress())


async def _egress_resume(request: web.Request) -> web.Response:
    index = int(request.match_info["index"])
    resumed = _api(request).resume_egress(index)
    if resumed is None:
        return problem(404, "Not found", f"no egress rule {index}")
    return json_response({"index": index, "resumed": resumed})


async def _tail(request: web.Request) -> web.StreamResponse:
    pattern = request.query.get("pattern", "")
    if not pattern:
        return problem(400, "Bad request", "pattern: a mesh-topic pattern is required (e.g. in/#)")
    spec = None
    if "filter" in request.query:
        try:
            spec = orjson.loads(request.query["filter"])
        except orjson.JSONDecodeError as exc:
            return problem(400, "Bad request", f"filter: not valid JSON: {exc}")
    try:
        feed = _api(request).tail(pattern, spec)
    except TopicError as exc:
        return problem(400, "Bad request", f"pattern: {exc}")
    except FilterError as exc:
        return problem(400, "Bad request", str(exc))
    except TooManyClients as exc:
        return problem(503, "Too many tail clients", str(exc), headers={"Retry-After": "5"})
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        # A plain GET learns that the request would be accepted (or why not: the
        # CLI asks this way when a handshake is refused, to show the detail).
        feed.close()
        return problem(426, "Upgrade required", "/api/tail is a WebSocket (Upgrade: websocket)")
    try:
        await ws.prepare(request)
        request.app[TAILS_KEY].add(ws)
        await _pump(ws, feed)
    finally:
        request.app[TAILS_KEY].discard(ws)
        feed.close()
    return ws


async def _close_tails(app: web.Application) -> None:
    """On shutdown, end the tails at once rather than after the server's timeout."""
    tails = app[TAILS_KEY]
    for ws in list(tails):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")


async def _pump(ws: web.WebSocketResponse, feed: TailFeed) -> None:
    """Send the feed's frames until the client closes (it sends nothing else)."""

    async def send() -> None:
        while True:
            await ws.send_str(await feed.next_frame())

    sender = asyncio.create_task(send(), name="api-tail-send")
    try:
        async for _msg in ws:
            pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def _publish(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return problem(400, "Bad request", f"body: not valid JSON: {exc}")
    try:
        return json_response(await _api(request).publish(body), status=202)
    except InvalidRequest as exc:
        return problem(400, "Invalid event", str(exc), field=exc.field)
    except InvalidEvent as exc:
        return problem(400, "Invalid event", str(exc), field=exc.attribute)
    except EventError as exc:
        return problem(400, "Invalid event", str(exc))
    except Overloaded as exc:
        retry = str(max(1, math.ceil(exc.retry_after)))
        return problem(503, "Overloaded", str(exc), headers={"Retry-After": retry})


@web.middleware
async def _arrived(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A complete request head: the connection is no longer pending (slowloris guard).
    request.app[GUARD_KEY].request_started(request.transport)
    return await handler(request)


@web.middleware
async def _authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    api = _api(request)
    refusal = auth.check(request, api.api_grants())
    if refusal is not None:
        where = "/events" if request.path.startswith("/events/") else "/api"
        detail = orjson.loads(refusal.body)["detail"] if isinstance(refusal.body, bytes) else ""
        api.api_refused(request.remote or "?", refusal.status, where, detail)
        return refusal
    return await handler(request)


def build_app(
    api: NodeApi, http: HttpRoutes, links: LinkHandler, *, max_body: int, guard: ConnectionGuard
) -> web.Application:
    app = web.Application(client_max_size=max_body, middlewares=[_arrived, _authorize])
    app[API_KEY] = api
    app[GUARD_KEY] = guard
    page.load()  # a page missing from the package fails the start, not the first visit
    app.router.add_get("/", page.handle)
    app[TAILS_KEY] = set()
    app.on_shutdown.append(_close_tails)
    app.router.add_get("/mesh", links)
    app.router.add_post("/events/{topic:.+}", http.dispatch)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/health", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/stats", _stats)
    app.router.add_get("/api/routes", _routes)
    app.router.add_get("/api/peers", _peers)
    app.router.add_get("/api/asyncapi", _asyncapi)
    app.router.add_get("/api/catalog", _catalog)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get("/api/dlq", _dlq_list)
    app.router.add_get("/api/dlq/{id:[0-9]+}", _dlq_show)
    app.router.add_post("/api/dlq/redrive", _dlq_redrive)
    app.router.add_post("/api/dlq/{id:[0-9]+}/redrive", _dlq_redrive)
    app.router.add_delete("/api/dlq", _dlq_purge)
    app.router.add_get("/api/egress", _egress)
    app.router.add_post("/api/egress/{index:[0-9]+}/resume", _egress_resume)
    app.router.add_get("/api/tail", _tail)
    app.router.add_post("/api/publish", _publish)
    return app
