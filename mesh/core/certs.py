"""Who a verified client certificate says its holder is.

A certificate names a node by its subject alternative names, DNS names or
URIs (``site-a``, ``spiffe://mesh/site-a`` is a URI and must equal the id to
match), else, when it has neither, by the common name of its subject. The
input is the dictionary :meth:`ssl.SSLSocket.getpeercert` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["certificate_identity", "identity_mismatch"]


def certificate_identity(peercert: Mapping[str, Any]) -> list[str]:
    """The names a certificate holds for its holder: SAN DNS and URI names, else the CN."""
    names = [
        str(value) for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "URI")
    ]
    if names:
        return names
    return [
        str(value)
        for rdn in peercert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    ]


def identity_mismatch(peercert: Mapping[str, Any] | None, node_id: str) -> str | None:
    """Why a certificate cannot speak for ``node_id``, or None if it can (or there is none).

    ``peercert`` is None or empty when the client presented no verified certificate.
    """
    if not peercert:
        return None
    names = certificate_identity(peercert)
    if node_id in names:
        return None
    return f"certificate identity {names!r} does not match node id {node_id!r}"
