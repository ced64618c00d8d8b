"""TLS to a broker: why a handshake failed, in words an operator can act on.

The ``tls`` block of a broker (:class:`mesh.config.ClientTls`) and its client
context (:func:`mesh.runtime.tls.client_context`) are the same as a peer
link's: the server's certificate and host name are verified, ``ca`` replaces
the system CAs, ``cert`` with ``key`` adds a client certificate. The MQTT
(``mqtts://``) and NATS (``tls://``) bridges build the context at every
connect, off the event loop, so a renewed certificate is picked up by the
next reconnect.
"""

from __future__ import annotations

import ssl

from mesh.runtime.tls import ssl_detail

__all__ = ["tls_reason"]


def tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS connection failed, in one line: "TLS handshake failed: ..."."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        detail = f"certificate verify failed: {exc.verify_message}"
    else:
        detail = ssl_detail(exc)
    if "certificate required" in detail:
        detail += " (the broker wants a client certificate: set tls.cert and tls.key)"
    elif "alert" in detail and ("certificate" in detail or "unknown ca" in detail):
        detail += " (the broker refused the client certificate)"
    return f"TLS handshake failed: {detail}"
