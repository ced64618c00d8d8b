"""TLS contexts: the node's listener, and the client side of ``wss://`` peers and brokers.

The listener's context lives as long as the listener (aiohttp's site holds
it), yet ``mesh reload`` must change its certificate and CAs. So the
listener's context is a front: for each handshake its ``sni_callback`` (called
with or without SNI) hands the connection the current context, built anew from
the files at every reload. A new handshake sees the new certificate and CA
set, a removed CA included; links already up keep their session. Loading files
blocks, so both builders are called in a thread.

The listener itself is a :class:`TlsSite`: asyncio's own TLS for each
connection, which also reports how the handshake ended, so a failed one is
logged and counted at the acceptor and a slow or surplus one is held to the
HTTP guard's deadline and bound (:mod:`mesh.api.guard`).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from mesh.config import ClientTls, NodeTls

__all__ = [
    "ServerTls",
    "TlsSite",
    "client_context",
    "handshake_label",
    "server_context",
    "ssl_detail",
]

VERIFY = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}


def server_context(tls: NodeTls) -> ssl.SSLContext:
    """A server context from ``node.tls`` (blocking: reads the files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert, tls.key)
    if tls.ca is not None:
        ctx.load_verify_locations(cafile=tls.ca)
    ctx.verify_mode = VERIFY[tls.client_auth]
    return ctx


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt for a passphrase on the terminal.
    raise ValueError("the key is encrypted; use a key without a passphrase")


def client_context(tls: ClientTls | None) -> ssl.SSLContext:
    """A client context, for a ``wss://`` peer or a broker (blocking: reads the files).

    The server is verified against ``tls.ca``, else the system's CAs, hostname
    included; ``tls.cert`` is presented when configured. Raises
    :class:`ValueError` naming the key and the path (never a file's contents)
    when a file cannot be read or is not what it should be.
    """
    tls = tls or ClientTls()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if tls.ca is not None:
            ctx.load_verify_locations(cafile=tls.ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls.ca {tls.ca}: {ssl_detail(exc)}") from exc
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key, password=_no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, ValueError) else ssl_detail(exc)
            raise ValueError(f"tls.cert {tls.cert} / tls.key {tls.key}: {detail}") from exc
    return ctx


_SUFFIX = re.compile(r"\s*\(_ssl\.c:\d+\)$")
_PREFIX = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*")


def ssl_detail(exc: BaseException) -> str:
    """OpenSSL's words, without its library tag and source line."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    return _SUFFIX.sub("", _PREFIX.sub("", text)) or type(exc).__name__


class ServerTls:
    """The listener's context, whose certificate and CAs a reload replaces."""

    def __init__(self, tls: NodeTls, current: ssl.SSLContext) -> None:
        self.tls = tls
        self._current = current
        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        front.minimum_version = ssl.TLSVersion.TLSv1_2
        # OpenSSL calls the callback for every handshake, SNI or not; the
        # front's own certificate (the one at start) is only a fallback.
        front.load_cert_chain(tls.cert, tls.key)
        front.sni_callback = self._select
        self.context = front
        self._sync()

    @classmethod
    async def load(cls, tls: NodeTls) -> ServerTls:
        current = await asyncio.to_thread(server_context, tls)
        return await asyncio.to_thread(cls, tls, current)

    async def reload(self, tls: NodeTls) -> None:
        """Use ``tls`` for every handshake from now on; raises (ssl.SSLError, OSError) if
        the files do not load, and then keeps the running context.

        Built anew even when the paths are the same: rotation usually replaces
        the files in place."""
        current = await asyncio.to_thread(server_context, tls)
        self.tls, self._current = tls, current
        self._sync()

    def _sync(self) -> None:
        # The connection takes the front's verify mode when it is created, before
        # the callback switches its context; the CAs come from the current one.
        self.context.verify_mode = self._current.verify_mode

    def _select(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        conn.context = self._current


# -- failed handshakes at the listener ---------------------------------------------------

_LABELS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no_certificate",
    "CERTIFICATE_VERIFY_FAILED": "bad_certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "WRONG_VERSION_NUMBER": "protocol",
    "HTTP_REQUEST": "protocol",
    "UNSUPPORTED_PROTOCOL": "protocol",
    "NO_SHARED_CIPHER": "protocol",
    "VERSION_TOO_LOW": "protocol",
}


# X509 verify codes meaning "this certificate chains to none of the trusted CAs":
# unable to get the issuer (2, 20), self-signed (18, 19), leaf signature unverifiable (21).
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})


def handshake_label(exc: BaseException) -> str:
    """A short metric label for why a TLS handshake failed.

    A client certificate that fails verification is ``unknown_ca`` when it
    chains to none of ``node.tls.ca`` (another CA's, a self-signed one) and
    ``bad_certificate`` otherwise (expired, not yet valid, wrong purpose...).
    """
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _UNKNOWN_ISSUER:
        return "unknown_ca"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in _LABELS:
        return _LABELS[reason]
    if isinstance(exc, TimeoutError | ConnectionError):
        return "aborted"
    return "other"


FailureHook = Callable[[str, BaseException], None]  # (client host, exception)
RefusedHook = Callable[[str, str], None]  # (mesh_http_refused_total reason, detail)


class Pending(Protocol):
    """What the listener shares with the HTTP guard: one bound and one deadline for
    connections that have not sent a request head (a TLS handshake is part of that)."""

    header_timeout: float
    max_pending: int

    @property
    def pending(self) -> int: ...


class _ObservedTls(sslproto.SSLProtocol):
    """The listener's TLS, as asyncio builds it for ``create_server(ssl=...)``, that also
    reports how the handshake ended: asyncio itself logs a failure only in debug mode.

    The waiter asyncio takes for that purpose is resolved exactly once: with
    nothing when the handshake completes (or the client leaves quietly), with
    the error when it fails (an ``ssl.SSLError``), when the client drops the
    connection during it, or when it outlasts the deadline
    (``ConnectionAbortedError``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        site: TlsSite,
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        super().__init__(
            loop,
            app,
            context,
            waiter,
            server_side=True,
            # A float works; typeshed says int.
            ssl_handshake_timeout=site.guard.header_timeout,  # type: ignore[arg-type]
        )
        self._site = site
        self._client = "?"
        self._admitted = False
        waiter.add_done_callback(self._ended)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._site.admit(self._client):
            transport.close()  # no handshake: connection_lost resolves the waiter
            return
        self._admitted = True
        super().connection_made(transport)

    def _ended(self, waiter: asyncio.Future[None]) -> None:
        if self._admitted:
            self._site.handshaking -= 1
        exc = None if waiter.cancelled() else waiter.exception()
        if exc is not None and self._admitted:
            self._site.ended(self._client, exc)


class TlsSite(web.TCPSite):
    """A TCP site serving TLS whose failed handshakes are reported (logged, counted).

    The same as ``TCPSite(ssl_context=...)``: the loop's server takes plain
    sockets and each connection's protocol is asyncio's SSLProtocol (a subclass
    that reports how the handshake ended) around aiohttp's request handler.
    A connection in its handshake has sent no request head yet, so the HTTP
    guard's limits hold for it too: the handshake must end within
    ``limits.http_header_timeout`` (not asyncio's 60 s), else the connection
    is closed and counted as ``header_timeout``; and connections in their
    handshake count towards ``limits.max_pending_connections`` with those
    waiting for a request head (the guard only sees a connection once its
    handshake is done), a new one beyond it closed at once as ``busy``.
    Both read the guard's current values, so ``mesh reload`` changes them.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        context: ssl.SSLContext,
        on_failure: FailureHook,
        guard: Pending,
        on_refused: RefusedHook,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._context = context
        self._on_failure = on_failure
        self._on_refused = on_refused
        self.guard = guard
        self.handshaking = 0  # connections whose TLS handshake has not ended

    @property
    def name(self) -> str:
        return super().name.replace("http://", "https://", 1)

    def admit(self, client: str) -> bool:
        """Whether a new connection may start its handshake (counted if so)."""
        most = self.guard.max_pending
        if self.handshaking + self.guard.pending >= most:
            self._on_refused(
                "busy",
                f"connection from {client} closed at once: {most} connections are in their "
                "TLS handshake or waiting for their request head (limits.max_pending_connections)",
            )
            return False
        self.handshaking += 1
        return True

    def ended(self, client: str, exc: BaseException) -> None:
        """A handshake failed or ran out of time."""
        if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
            self._on_refused(
                "header_timeout",
                f"connection from {client} did not complete its TLS handshake within "
                f"{self.guard.header_timeout:g}s (limits.http_header_timeout)",
            )
        else:
            self._on_failure(client, exc)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        context = self._context

        def protocol() -> asyncio.BaseProtocol:
            return _ObservedTls(loop, server(), context, self)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
