"""Connections that have not said what they want yet: bounded in number and in time.

A slowloris client opens connections and sends a request head a byte at a
time, or nothing, to hold the server's connection slots. aiohttp has no
deadline for a request head, so the node keeps its own:

- a connection must deliver a complete request head within
  ``limits.http_header_timeout`` of opening, else it is closed and counted in
  ``mesh_http_refused_total{reason="header_timeout"}``. After a response,
  aiohttp's keep-alive timeout (set to the same value when the node starts)
  closes a connection whose next request head has not arrived;
- at most ``limits.max_pending_connections`` connections may be waiting for a
  request head at once; a new one beyond that is closed at once, counted with
  ``reason="busy"``.

Connections are seen through the aiohttp server's ``connection_made`` and
``connection_lost`` (what its request handlers report to it) and the
middleware's start of each request. A WebSocket is a request that lasts as
long as the link, so a link is never pending. On a TLS listener the
handshake comes first and is held to the same limits (``mesh.runtime.tls``).
Unparsable requests are counted by :class:`ServerLog`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["ConnectionGuard", "ServerLog"]


class ConnectionGuard:
    def __init__(
        self,
        header_timeout: float,
        max_pending: int,
        refused: Callable[[str, str], None],
    ) -> None:
        self.header_timeout = header_timeout
        self.max_pending = max_pending
        self._refused = refused  # (reason label, detail) -> count and log
        self._pending: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    def attach(self, server: web.Server) -> None:
        """Watch ``server``'s connections (call once, before it serves)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.opened(transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            transport = handler.transport
            if transport is not None:
                self.closed(transport)
            lost(handler, exc)

        # Wrapped on this one instance: aiohttp calls them as the server's
        # connection manager; the server's own bookkeeping still runs first.
        setattr(server, "connection_made", connection_made)  # noqa: B010
        setattr(server, "connection_lost", connection_lost)  # noqa: B010

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- what the server and the middleware report ----------------------------------------

    def opened(self, transport: asyncio.BaseTransport) -> None:
        if len(self._pending) >= self.max_pending:
            peer = _peer(transport)
            self._refused(
                "busy",
                f"connection from {peer} closed at once: {self.max_pending} connections "
                "are waiting for their request head (limits.max_pending_connections)",
            )
            transport.close()
            return
        self._arm(transport)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request head arrived on ``transport``: it is no longer pending."""
        if transport is not None and (handle := self._pending.pop(transport, None)) is not None:
            handle.cancel()

    def closed(self, transport: asyncio.BaseTransport) -> None:
        if (handle := self._pending.pop(transport, None)) is not None:
            handle.cancel()

    # -- the deadline ---------------------------------------------------------------------

    def _arm(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._pending[transport] = loop.call_later(self.header_timeout, self._expire, transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if self._pending.pop(transport, None) is None:
            return
        self._refused(
            "header_timeout",
            f"connection from {_peer(transport)} sent no complete request head within "
            f"{self.header_timeout:g}s (limits.http_header_timeout)",
        )
        transport.close()


def _peer(transport: asyncio.BaseTransport) -> str:
    """The client's address, without its port: repeats from one host log as one fault."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, for the node's HTTP server: a request aiohttp cannot
    parse (bad framing, control bytes in a header) is a client's fault, so it is
    counted (``mesh_http_refused_total{reason="malformed"}``) and logged in one
    line with repeats summed, not as an error with a traceback per request, which
    any client could turn into a flood of the log. aiohttp still answers it 400
    with what was wrong; everything else goes to aiohttp's logger unchanged.
    """

    def __init__(self, refused: Callable[[str, str], None]) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._refused = refused

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and 400 <= (exc_info.code or 0) < 500:
            client = args[0] if args else "?"
            # Only the first line: the rest quotes the offending bytes, which may be
            # part of a credential (an Authorization header, say).
            detail = str(exc_info.message).strip().splitlines()[0].rstrip(":")[:200]
            self._refused("malformed", f"unparsable request from {client}: {detail}")
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)
