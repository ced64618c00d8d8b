"""TLS to a broker: the ``tls`` block of a broker's configuration and its client context.

Shared by the MQTT (``mqtts://``) and NATS (``tls://``) bridges. The context
is a client one with the server's certificate and host name verified
(:func:`ssl.create_default_context`); ``ca`` replaces the system CAs, and
``cert`` with ``key`` adds a client certificate.

Paths are used as written: a relative one is relative to the node's working
directory (the configuration loader resolves no path against the file's own
folder, ``node.data_dir`` included). Files are read at every connect, off the
event loop, so a renewed certificate is picked up by the next reconnect; a
file that cannot be read or parsed is a connect error naming the key and the
path, never its contents.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["TlsConfig", "client_context", "tls_reason"]


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca: Path | None = Field(
        None,
        description="PEM file of the CA certificates that may sign the broker's certificate; "
        "default: the system's CAs. Relative to the node's working directory",
    )
    cert: Path | None = Field(
        None,
        description="PEM file of the node's client certificate (and any intermediates); needs key",
    )
    key: Path | None = Field(
        None, description="PEM file of the client certificate's private key (not encrypted)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            have, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise ValueError(
                f"tls.{have} is set without tls.{missing}: a client certificate needs both"
            )
        return self


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt for a passphrase on the terminal.
    raise ValueError("the key is encrypted; use a key without a passphrase")


def client_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """A client context for ``tls`` (blocking: it reads files; run it in a thread).

    Raises :class:`ValueError` naming the key and the path when a file cannot
    be read or is not what it should be.
    """
    tls = tls or TlsConfig()
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls.ca {tls.ca}: {_detail(exc)}") from exc
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key, password=_no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as exc:
            detail = _detail(exc) if not isinstance(exc, ValueError) else str(exc)
            raise ValueError(f"tls.cert {tls.cert} / tls.key {tls.key}: {detail}") from exc
    return ctx


_SUFFIX = re.compile(r"\s*\(_ssl\.c:\d+\)$")
_PREFIX = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*")


def _detail(exc: BaseException) -> str:
    """OpenSSL's words, without its library tag and source line."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    return _SUFFIX.sub("", _PREFIX.sub("", text)) or type(exc).__name__


def tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS connection failed, in one line: "TLS handshake failed: ..."."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        detail = f"certificate verify failed: {exc.verify_message}"
    else:
        detail = _detail(exc)
    if "certificate required" in detail:
        detail += " (the broker wants a client certificate: set tls.cert and tls.key)"
    elif "alert" in detail and ("certificate" in detail or "unknown ca" in detail):
        detail += " (the broker refused the client certificate)"
    return f"TLS handshake failed: {detail}"
