"""TLS contexts: the node's listener and the dialers of ``wss://`` peers.

The listener's context lives as long as the listener (aiohttp's site holds
it), yet ``mesh reload`` must change its certificate and CAs. So the
listener's context is a front: for each handshake its ``sni_callback`` (called
with or without SNI) hands the connection the current context, built anew from
the files at every reload. A new handshake sees the new certificate and CA
set, a removed CA included; links already up keep their session. Loading files
blocks, so both builders are called in a thread.
"""

from __future__ import annotations

import asyncio
import ssl

from mesh.config import NodeTls, PeerTls

__all__ = ["ServerTls", "client_context", "server_context"]

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


def client_context(tls: PeerTls | None) -> ssl.SSLContext:
    """A client context for a ``wss://`` peer (blocking: reads the files).

    The server is verified against ``tls.ca``, else the system's CAs, hostname
    included; ``tls.cert`` is presented when configured.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None and tls.ca is not None:
        ctx.load_verify_locations(cafile=tls.ca)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls is not None and tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


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
        the files do not load, and then keeps the running context."""
        if tls == self.tls:
            return
        current = await asyncio.to_thread(server_context, tls)
        self.tls, self._current = tls, current
        self._sync()

    def _sync(self) -> None:
        # The connection takes the front's verify mode when it is created, before
        # the callback switches its context; the CAs come from the current one.
        self.context.verify_mode = self._current.verify_mode

    def _select(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        conn.context = self._current
