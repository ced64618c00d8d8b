"""The conformance suite against a real HTTP server on a free port.

The server stands in for both ends of the HTTP bridge: it routes
``POST /events/<topic>`` to the bridge's receive side (mesh.api.ingress
HttpRoutes, as the node's server does) and records webhooks posted to
``/sink/<tag>/<leaf>``. Independent clients are plain aiohttp requests; an
unanswered request is an unacknowledged delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridges.http import SPEC
from mesh.api.ingress import HttpRoutes
from mesh.plugins import HttpIngress, Subscribe
from tests.conformance.base import BridgeConformance, Facts, Overflow
from tests.conformance.wire import Collected, Sending, Wire


class HttpWire(Wire):
    label = "HTTP"
    unacked_by_reconnect = False  # the open requests say

    def __init__(self) -> None:
        self.routes = HttpRoutes()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._seen: dict[str, Collected] = {}
        self._sending: dict[str, list[asyncio.Task[int]]] = {}

    async def start(self) -> HttpWire:
        app = web.Application()
        app.router.add_post("/events/{topic:.+}", self.routes.dispatch)
        app.router.add_post("/sink/{tag}/{leaf}", self._sink)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        # No connection limit: a request stays open until the node answers it.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self

    async def _sink(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = self._seen.setdefault(request.match_info["tag"], Collected())
        seen.add(str(request.url), body)
        return web.Response(status=204)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, identity: str, *, proxied: bool = False) -> dict[str, Any]:
        return {"kind": "http", "timeout": 5.0}

    def ingress(self) -> HttpIngress:
        return self.routes

    def topic(self, tag: str, leaf: str) -> str:
        return f"{self.base}/sink/{tag}/{leaf}"

    def loop_topic(self, tag: str, leaf: str) -> str:
        return f"{self.base}/events/{tag}/{leaf}"  # the bridge's own receive side

    def subscription(self, tag: str) -> Subscribe:
        return Subscribe(f"{tag}/#")

    def bad_topics(self, tag: str) -> list[str]:
        return ["not a url", f"ftp://127.0.0.1:{self.port}/{tag}", "http://"]

    async def inject(self, tag: str, payloads: Sequence[bytes], *, ordered: bool = True) -> Sending:
        session = self._session
        assert session is not None
        url = f"{self.base}/events/{tag}/in"

        async def post(body: bytes, after: asyncio.Task[int] | None) -> int:
            if after is not None:  # in order: each request once the one before is answered
                await after
            async with session.post(url, data=body) as resp:
                await resp.read()
                return resp.status

        tasks: list[asyncio.Task[int]] = []
        for i, p in enumerate(payloads):
            after = tasks[-1] if ordered and tasks else None
            tasks.append(asyncio.create_task(post(p, after), name=f"inject[{tag}#{i}]"))
        self._sending.setdefault(tag, []).extend(tasks)
        return Sending(tasks)

    async def observe(self, tag: str) -> Collected:
        return self._seen.setdefault(tag, Collected())

    async def stored(self, tag: str) -> int | None:
        return len(self._seen.get(tag, Collected()).items)

    async def unacked(self, tag: str) -> int | None:
        return sum(not t.done() for t in self._sending.get(tag, []))

    async def stop(self) -> None:
        await self.kill()

    async def kill(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def aclose(self) -> None:
        tasks = [t for ts in self._sending.values() for t in ts]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        await self.kill()


class TestHttp(BridgeConformance):
    label = "HTTP"
    spec = SPEC
    config = {"kind": "http"}
    facts = Facts(connects=False, overflow=Overflow.REFUSED)
    why_not = {
        "redelivery": "a request is answered, never held: one left unanswered is the "
        "sender's to retry, nothing waits at a broker for a reconnect",
        "connects": "HTTP keeps no connection: connect() opens a client session and "
        "serves routes on the node's server; a webhook target is reached per request",
    }

    @pytest.fixture
    async def wire(self) -> AsyncIterator[Wire]:
        yield await HttpWire().start()
