"""TLS contexts: the node's listener, and the client side of ``wss://`` peers and brokers.

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
import re
import ssl

from mesh.config import ClientTls, NodeTls

__all__ = ["ServerTls", "client_context", "server_context", "ssl_detail"]

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
