"""``POST /events/<topic>``: the node's HTTP server as the receive side of bridges.

Bridges that take HTTP requests (the HTTP bridge) serve their topics through
:class:`HttpRoutes` (:class:`mesh.plugins.HttpIngress`); the server hands
each request to them in the order the brokers appear in the configuration,
and the first whose ingress rules match the topic answers it.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from mesh.api.responses import problem
from mesh.plugins import HttpHandler

__all__ = ["HttpRoutes"]


class HttpRoutes:
    """The handlers bridges registered for ``POST /events/<topic>``."""

    def __init__(
        self, order: list[str] | None = None, starting: Callable[[], list[str]] | None = None
    ) -> None:
        self.order = order or []
        self._starting = starting
        self._handlers: dict[str, HttpHandler] = {}

    def serve(self, broker: str, handler: HttpHandler) -> Callable[[], None]:
        self._handlers[broker] = handler

        def stop() -> None:
            if self._handlers.get(broker) is handler:
                del self._handlers[broker]

        return stop

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        topic = request.match_info["topic"]
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
