"""``POST /events/<topic>``: the node's HTTP server as the receive side of bridges.

Bridges that take HTTP requests (the HTTP bridge) serve their topics through
:class:`HttpRoutes` (:class:`mesh.plugins.HttpIngress`); the server hands
each request to them in the order the brokers appear in the configuration,
and the first whose ingress rules match the topic answers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from mesh.api.responses import problem
from mesh.plugins import HttpHandler

__all__ = ["HttpRoutes"]


class HttpRoutes:
    """The handlers bridges registered for ``POST /events/<topic>``."""

    def __init__(
        self,
        order: list[str] | None = None,
        starting: Callable[[], list[str]] | None = None,
        *,
        refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.order = order or []
        self._starting = starting
        self._refused = refused  # (reason label, detail): counted and logged by the node
        self._handlers: dict[str, HttpHandler] = {}
        self.body_timeout = 30.0  # limits.http_body_timeout
        self.max_body = 1 << 24  # the server's client_max_size

    def serve(self, broker: str, handler: HttpHandler) -> Callable[[], None]:
        self._handlers[broker] = handler

        def stop() -> None:
            if self._handlers.get(broker) is handler:
                del self._handlers[broker]

        return stop

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        topic = request.match_info["topic"]
        if request.body_exists and (early := await self._read_body(request)) is not None:
            return early
        rank = {name: i for i, name in enumerate(self.order)}
        for broker in sorted(self._handlers, key=lambda b: rank.get(b, len(rank))):
            handler = self._handlers.get(broker)
            if handler is None:
                continue
            response = await handler(request, topic)
            if response is not None:
                return response
        starting = self._starting() if self._starting is not None else []
        if starting:
            return problem(
                503,
                "Starting",
                f"brokers not connected yet: {', '.join(starting)}",
                headers={"Retry-After": "1"},
            )
        return problem(404, "No ingress rule", f"no HTTP ingress rule matches topic {topic!r}")

    async def _read_body(self, request: web.Request) -> web.StreamResponse | None:
        """Read the body within ``body_timeout`` (a slow body holds no handler); aiohttp
        keeps it for the bridge's own read. A refusal, or None to go on."""
        if request.content_length is not None and request.content_length > self.max_body:
            return None  # too large: the bridge refuses it without reading it
        try:
            async with asyncio.timeout(self.body_timeout):
                await request.read()
        except TimeoutError:
            detail = (
                f"the request body did not arrive within {self.body_timeout:g}s "
                "(limits.http_body_timeout)"
            )
            if self._refused is not None:
                self._refused("body_timeout", f"{request.remote or '?'}: {detail}")
            return problem(408, "Request timeout", detail, headers={"Connection": "close"})
        except web.HTTPRequestEntityTooLarge as exc:
            return problem(413, "Request too large", exc.text or "request body too large")
        return None
