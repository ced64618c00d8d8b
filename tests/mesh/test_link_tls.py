"""TLS and mutual TLS on the node's listener and on peer links.

Certificates are minted per test with trustme (none are committed). Server
certificates name 127.0.0.1, since hostname verification stays on; a client
certificate names its node id as a SAN DNS name.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from mesh.config import MeshConfig
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, nats_collect, node_config, unique, wait_for

TOKEN = "correct-horse"


class Pki:
    """A CA of the mesh and the PEM files it issues, written under ``root``."""

    def __init__(self, root: Path, ca: trustme.CA | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = ca or trustme.CA()
        self.ca_pem = root / f"ca-{id(self.ca)}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self._n = 0

    def issue(self, *names: str) -> tuple[Path, Path]:
        """A certificate for ``names`` (chain, key) as files."""
        self._n += 1
        cert = self.ca.issue_cert(*names)
        chain = self.root / f"cert-{self._n}.pem"
        key = self.root / f"key-{self._n}.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        return chain, key


def server_tls(pki: Pki, client_auth: str = "required", names: tuple[str, ...] = ()) -> Any:
    cert, key = pki.issue("127.0.0.1", "localhost", *names)
    return {"cert": str(cert), "key": str(key), "ca": str(pki.ca_pem), "client_auth": client_auth}


def peer_tls(pki: Pki, node_id: str, ca: Path | None = None) -> dict[str, str]:
    cert, key = pki.issue(node_id, "localhost")
    return {"ca": str(ca or pki.ca_pem), "cert": str(cert), "key": str(key)}


def b_config(tmp_path: Path, tls: dict[str, str], **sections: Any) -> MeshConfig:
    node = {"id": "site-b", "listen": "127.0.0.1:0", "data_dir": str(tmp_path / "site-b")}
    sections.setdefault("accept", [{"id": "site-a", "token": TOKEN}])
    return _parse({"node": {**node, "tls": tls}, **sections})


def _parse(data: dict[str, Any]) -> MeshConfig:
    from mesh.config import parse_config

    return parse_config(data, "<test>", env={}, overrides={})


def a_config(
    tmp_path: Path,
    port: int,
    tls: dict[str, str] | None,
    *,
    node_id: str = "site-a",
    token: str = TOKEN,
    scheme: str = "wss",
    **sections: Any,
) -> MeshConfig:
    peer: dict[str, Any] = {"id": "site-b", "url": f"{scheme}://127.0.0.1:{port}/mesh"}
    peer["token"] = token
    if tls is not None:
        peer["tls"] = tls
    return node_config(tmp_path, node_id, peers=[peer], **sections)


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_a_certificate_from_another_ca_fails_the_handshake(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    mesh_ca = Pki(tmp_path / "pki")
    rogue = Pki(tmp_path / "rogue")
    async with Node(b_config(tmp_path, server_tls(mesh_ca))).serve() as b:
        # The rogue trusts the mesh's server certificate but holds one from its own CA.
        tls = peer_tls(rogue, "site-a", ca=mesh_ca.ca_pem)
        async with Node(a_config(tmp_path, b.port, tls)).serve() as a:
            await wait_for(lambda: messages(caplog, "link[site-b]"), what="the dialer's failure")
            await asyncio.sleep(0.3)
            assert a.sessions == {} and b.sessions == {}
    dialer = messages(caplog, "link[site-b]")
    assert "TLS handshake with wss://127.0.0.1:" in dialer[0], dialer
    # The acceptor logs and counts the failed handshake, with OpenSSL's reason.
    acceptor = messages(caplog, "tls failed: TLS handshake from 127.0.0.1 failed")
    assert acceptor and "certificate verify failed" in acceptor[0], acceptor
    assert b.metrics.get("mesh_tls_handshake_failures_total", reason="unknown_ca") >= 1
    assert b.metrics.total("mesh_link_sessions_total") == 0


async def test_no_client_certificate_fails_the_handshake_when_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    pki = Pki(tmp_path / "pki")
    async with Node(b_config(tmp_path, server_tls(pki))).serve() as b:
        tls = {"ca": str(pki.ca_pem)}
        async with Node(a_config(tmp_path, b.port, tls)).serve() as a:
            await wait_for(lambda: messages(caplog, "link[site-b]"), what="the failure")
            assert a.sessions == {} and b.sessions == {}
    assert "TLS handshake with" in messages(caplog, "link[site-b]")[0]
    acceptor = messages(caplog, "tls failed: TLS handshake from 127.0.0.1 failed")
    assert acceptor and "did not return a certificate" in acceptor[0].lower(), acceptor
    assert b.metrics.get("mesh_tls_handshake_failures_total", reason="no_certificate") >= 1


async def test_a_wrong_token_over_mtls_is_refused_in_both_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    pki = Pki(tmp_path / "pki")
    async with Node(b_config(tmp_path, server_tls(pki))).serve() as b:
        cfg = a_config(tmp_path, b.port, peer_tls(pki, "site-a"), token="wrong")
        async with Node(cfg).serve() as a:
            await wait_for(lambda: a.refusals.get("site-b"), what="the refusal")
            assert a.sessions == {} and b.sessions == {}
    reason = "wrong token for node 'site-a'"
    acceptor = messages(caplog, "accept[127.0.0.1] refused: link site-a:")
    assert len(acceptor) == 1 and reason in acceptor[0]
    assert reason in messages(caplog, "link[site-b]")[0]


async def test_a_certificate_for_another_node_is_refused_in_both_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    pki = Pki(tmp_path / "pki")
    async with Node(b_config(tmp_path, server_tls(pki))).serve() as b:
        # The right token, but the certificate of site-c.
        cert, key = pki.issue("site-c")
        tls = {"ca": str(pki.ca_pem), "cert": str(cert), "key": str(key)}
        async with Node(a_config(tmp_path, b.port, tls)).serve() as a:
            await wait_for(lambda: a.refusals.get("site-b"), what="the refusal")
            assert a.sessions == {} and b.sessions == {}
    reason = "certificate identity ['site-c'] does not match node id 'site-a'"
    acceptor = messages(caplog, "accept[127.0.0.1] refused: link site-a:")
    assert len(acceptor) == 1 and reason in acceptor[0]
    assert reason in messages(caplog, "link[site-b]")[0]
    assert b.metrics.get("mesh_link_refused_total", reason="certificate") == 1


async def test_a_plain_ws_dial_to_a_tls_listener_makes_no_link(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh")
    pki = Pki(tmp_path / "pki")
    async with Node(b_config(tmp_path, server_tls(pki))).serve() as b:
        a_cfg = a_config(tmp_path, b.port, None, scheme="ws")
        async with Node(a_cfg).serve() as a:
            await wait_for(lambda: messages(caplog, "link[site-b]"), what="the failure")
            # The acceptor saw a request in clear where a handshake should be.
            await wait_for(
                lambda: b.metrics.get("mesh_tls_handshake_failures_total", reason="protocol"),
                what="the acceptor's count",
            )
            assert a.sessions == {} and b.sessions == {}
    assert "cannot connect to ws://" in messages(caplog, "link[site-b]")[0]
    acceptor = messages(caplog, "tls failed: TLS handshake from 127.0.0.1 failed")
    assert acceptor and "http request" in acceptor[0].lower(), acceptor


async def test_an_mtls_link_carries_mqtt_to_nats(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> None:
    tag = unique()
    pki = Pki(tmp_path / "pki")
    b_cfg = b_config(
        tmp_path,
        server_tls(pki),
        brokers={"bus": {"kind": "nats", "url": nats_server.url}},
        egress=[{"to": "bus", "topic": "site-a/#", "target": f"{tag}.out.{{subject}}"}],
    )
    async with Node(b_cfg).serve() as b:
        a_cfg = a_config(
            tmp_path,
            b.port,
            peer_tls(pki, "site-a"),
            brokers={"plant": {"kind": "mqtt", "url": mosquitto.url}},
            ingress=[
                {
                    "from": "plant",
                    "topic": f"{tag}/+",
                    "mesh_topic": "site-a/{1}",
                    "event": {"type": "com.example.t", "subject": "{1}"},
                }
            ],
        )
        async with (
            Node(a_cfg).serve() as a,
            nats_collect(nats_server.url, f"{tag}.out.>") as got,
        ):
            await a.ready()
            await b.ready()
            await wait_for(lambda: "site-a" in b.sessions, what="the mTLS link")
            await wait_for(
                lambda: any(r.next_hop == "site-b" for r in a.table.routes()),
                what="site-b's interest at site-a",
            )
            client = MqttClient(mosquitto.url)
            try:
                client.publish_many([(f"{tag}/e{i}", b'{"n": 1}') for i in range(5)])
            finally:
                client.close()
            await wait_for(lambda: len(got) == 5, 20, "5 events at NATS")
            assert sorted(got) == [f"e{i}" for i in range(5)]


async def test_reload_rotates_the_server_certificate_and_keeps_links(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    b_cfg = b_config(tmp_path, server_tls(pki))
    async with Node(b_cfg).serve() as b:
        a_cfg = a_config(tmp_path, b.port, peer_tls(pki, "site-a"))
        async with Node(a_cfg).serve():
            await wait_for(lambda: "site-a" in b.sessions, what="the first link")
            first = b.sessions["site-a"]
            new = server_tls(pki, names=("rotated.example",))
            await b.reload(b_config(tmp_path, new))
            assert b.config.node.tls is not None and str(b.config.node.tls.cert) == new["cert"]
            # The existing link stays up through the reload.
            await asyncio.sleep(0.3)
            assert b.sessions.get("site-a") is first
            # A new node linking now is served the new certificate.
            seen: list[dict[str, Any]] = []
            cfg_c = node_config(
                tmp_path,
                "site-c",
                peers=[
                    {
                        "id": "site-b",
                        "url": f"wss://127.0.0.1:{b.port}/mesh",
                        "token": TOKEN,
                        "tls": peer_tls(pki, "site-c"),
                    }
                ],
            )
            b_accept = b_config(
                tmp_path,
                new,
                accept=[{"id": "site-a", "token": TOKEN}, {"id": "site-c", "token": TOKEN}],
            )
            await b.reload(b_accept)
            async with Node(cfg_c).serve():
                await wait_for(lambda: "site-c" in b.sessions, what="a link with the new cert")
                seen.append(await served_certificate(b.port, pki))
            assert ("DNS", "rotated.example") in seen[0]["subjectAltName"]
            assert b.sessions.get("site-a") is first


async def served_certificate(port: int, pki: Pki) -> dict[str, Any]:
    """The certificate the node at ``port`` serves a new handshake."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    cert, key = pki.issue("probe")
    ctx.load_cert_chain(cert, key)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        peer = writer.get_extra_info("peercert")
        assert isinstance(peer, dict)
        return peer
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_ca_removed_by_reload_no_longer_admits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reloading replaces the CA set, it does not add to it: a removed CA is out."""
    caplog.set_level(logging.INFO, logger="mesh")
    old_ca = Pki(tmp_path / "old")
    new_ca = Pki(tmp_path / "new")
    tls = server_tls(old_ca)
    async with Node(b_config(tmp_path, tls)).serve() as b:
        await b.reload(b_config(tmp_path, {**tls, "ca": str(new_ca.ca_pem)}))
        peer = peer_tls(old_ca, "site-a")
        async with Node(a_config(tmp_path, b.port, peer)).serve() as a:
            await wait_for(lambda: messages(caplog, "link[site-b]"), what="the failure")
            assert a.sessions == {} and b.sessions == {}
        assert "TLS handshake with" in messages(caplog, "link[site-b]")[0]


async def test_the_cli_talks_to_an_https_node(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    async with Node(b_config(tmp_path, server_tls(pki, "optional"))).serve() as b:
        url = f"https://127.0.0.1:{b.port}"
        ok = await cli("peers", "--json", "--url", url, "--cacert", str(pki.ca_pem))
        assert ok[0] == 0, ok
        assert orjson.loads(ok[1])["node"] == "site-b"
        bad = await cli("peers", "--url", url)  # the system CAs do not know the test CA
        assert bad[0] != 0 and "certificate verify failed" in bad[2], bad
    async with Node(b_config(tmp_path, server_tls(pki, "required"))).serve() as b:
        url = f"https://127.0.0.1:{b.port}"
        cert, key = pki.issue("operator")
        args = ["--url", url, "--cacert", str(pki.ca_pem), "--cert", str(cert), "--key", str(key)]
        ok = await cli("peers", "--json", *args)
        assert ok[0] == 0, ok


async def cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_connection_that_never_starts_its_handshake_is_closed_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS slowloris: the handshake has limits.http_header_timeout, like a request head."""
    caplog.set_level(logging.INFO, logger="mesh")
    pki = Pki(tmp_path / "pki")
    cfg = b_config(tmp_path, server_tls(pki), limits={"http_header_timeout": 0.5})
    async with Node(cfg).serve() as b:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the node
        finally:
            writer.close()
        await wait_for(
            lambda: b.metrics.get("mesh_http_refused_total", reason="header_timeout") == 1,
            what="the timeout counted",
        )
        assert b.metrics.total("mesh_tls_handshake_failures_total") == 0
    assert any("did not complete its TLS handshake within 0.5s" in m for m in caplog.messages)


async def test_connections_in_their_handshake_count_towards_max_pending_connections(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path / "pki")
    cfg = b_config(tmp_path, server_tls(pki, "optional"), limits={"max_pending_connections": 3})
    async with Node(cfg).serve() as b:
        idle = [await asyncio.open_connection("127.0.0.1", b.port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the fourth: closed at once
        writer.close()
        assert b.metrics.get("mesh_http_refused_total", reason="busy") == 1
        for _r, w in idle:
            w.close()
        # Their handshakes end (the clients left), the slots are free: a client is served.
        await wait_for(
            lambda: b.metrics.get("mesh_tls_handshake_failures_total", reason="aborted") == 3,
            what="the three idle handshakes ended",
        )
        assert await _handshake_ok(b.port, pki)
        assert b.metrics.get("mesh_http_refused_total", reason="busy") == 1


async def _handshake_ok(port: int, pki: Pki) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (OSError, ssl.SSLError):
        return False
    w.close()
    return True


def test_handshake_labels_tell_an_unknown_ca_from_a_bad_certificate() -> None:
    from mesh.runtime.tls import handshake_label

    def verify_failed(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
        exc.reason, exc.verify_code = "CERTIFICATE_VERIFY_FAILED", code
        return exc

    assert handshake_label(verify_failed(20)) == "unknown_ca"  # unable to get local issuer
    assert handshake_label(verify_failed(18)) == "unknown_ca"  # self-signed
    assert handshake_label(verify_failed(10)) == "bad_certificate"  # expired
    assert handshake_label(ConnectionResetError()) == "aborted"
    assert handshake_label(ssl.SSLError(1, "?")) == "other"
