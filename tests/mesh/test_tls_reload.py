"""Certificates change with ``mesh reload``: files rotated in place, a CA withdrawn.

- Rotation usually rewrites the files at the same paths: the reload must
  read them again, so the next handshake is served the new certificate.
- A CA removed from ``node.tls.ca`` closes the accepted links whose client
  certificate it issued (they must authenticate again), and keeps the links
  whose certificate the new CAs still issue.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import trustme

from mesh.runtime.node import Node
from tests.helpers import wait_for
from tests.mesh.test_link_tls import (
    TOKEN,
    Pki,
    a_config,
    b_config,
    peer_tls,
    served_certificate,
    server_tls,
)

pytestmark = pytest.mark.timeout(60)


async def test_certificates_rotated_in_place_are_served_after_a_reload(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    tls = server_tls(pki)
    async with Node(b_config(tmp_path, tls)).serve() as b:
        before = await served_certificate(b.port, pki)
        assert ("DNS", "rotated.example") not in before["subjectAltName"]
        # A new pair written over the old files, as certbot or cert-manager do.
        new = server_tls(pki, names=("rotated.example",))
        shutil.copyfile(new["cert"], tls["cert"])
        shutil.copyfile(new["key"], tls["key"])
        await b.reload(b_config(tmp_path, tls))  # the same paths
        after = await served_certificate(b.port, pki)
        assert ("DNS", "rotated.example") in after["subjectAltName"]


async def test_a_ca_withdrawn_by_reload_closes_the_links_it_admitted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    old, new = Pki(tmp_path / "old"), Pki(tmp_path / "new")
    both = tmp_path / "both.pem"
    both.write_bytes(old.ca_pem.read_bytes() + new.ca_pem.read_bytes())
    tls = {**server_tls(old), "ca": str(both)}
    accept = [{"id": "site-a", "token": TOKEN}, {"id": "site-c", "token": TOKEN}]
    async with Node(b_config(tmp_path, tls, accept=accept)).serve() as b:
        a_cfg = a_config(tmp_path, b.port, peer_tls(old, "site-a"))
        c_cfg = a_config(
            tmp_path, b.port, {**peer_tls(new, "site-c"), "ca": str(old.ca_pem)}, node_id="site-c"
        )
        async with Node(a_cfg).serve(), Node(c_cfg).serve():
            await wait_for(lambda: {"site-a", "site-c"} <= set(b.sessions), what="two links")
            kept = b.sessions["site-c"]
            # The old CA is withdrawn: site-a's certificate is no longer trusted.
            await b.reload(b_config(tmp_path, {**tls, "ca": str(new.ca_pem)}, accept=accept))
            assert b.metrics.get("mesh_link_closed_by_reload_total", peer="site-a") == 1
            assert b.sessions.get("site-c") is kept, "a link the new CAs still admit stays"
            closed = [m for m in caplog.messages if m.startswith("link site-a closed by reload")]
            assert closed and "not issued by a CA in node.tls.ca" in closed[0], closed
            # site-a redials, and its new handshake is refused: it stays out.
            await wait_for(
                lambda: (
                    b.metrics.total("mesh_link_sessions_total") == 2 and "site-a" not in b.sessions
                ),
                what="site-a to stay out",
            )


def test_a_certificate_from_an_unrelated_ca_is_untrusted() -> None:
    from mesh.core.certs import untrusted

    ca, other = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("site-a")
    der = _der(leaf.cert_chain_pems[0].bytes())
    assert untrusted(der, ca.cert_pem.bytes()) is None
    assert untrusted(der, other.cert_pem.bytes() + ca.cert_pem.bytes()) is None
    assert "not issued" in (untrusted(der, other.cert_pem.bytes()) or "")
    assert "cannot be read" in (untrusted(b"junk", ca.cert_pem.bytes()) or "")


def _der(pem: bytes) -> bytes:
    import ssl

    return ssl.PEM_cert_to_DER_cert(pem.decode())
