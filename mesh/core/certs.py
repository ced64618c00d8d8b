"""Who a verified client certificate says its holder is.

A certificate names a node by its subject alternative names, DNS names or
URIs (``site-a``, ``spiffe://mesh/site-a`` is a URI and must equal the id to
match), else, when it has neither, by the common name of its subject. The
input is the dictionary :meth:`ssl.SSLSocket.getpeercert` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

__all__ = ["certificate_identity", "identity_mismatch", "untrusted"]


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


def untrusted(leaf_der: bytes, ca_pem: bytes) -> str | None:
    """Why a client certificate (DER) is not issued by one of the CAs (PEM), or None.

    For links already up when a reload changes ``node.tls.ca``: their handshake
    is over, so the certificate is checked against the new CAs here. Only the
    leaf is at hand (the handshake's chain is not kept), so a certificate from
    an intermediate not in the file counts as untrusted: that link is closed and
    its next handshake decides.
    """
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        return f"the certificate or the CA file cannot be read ({exc})"
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return None
    return "its certificate is not issued by a CA in node.tls.ca any more"
