"""TLS and credentials to real brokers: Mosquitto and nats-server with TLS listeners.

Certificates are minted per test with trustme (none is committed). Every
failure must be a BridgeError with a clear reason, quickly, and no secret
(password, token, seed) may appear in a configuration's repr or dump or in
an error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme

from bridges.mqtt import SPEC as MQTT
from bridges.nats import SPEC as NATS
from mesh.config import json_schema, parse_config
from mesh.core.errors import BridgeError, ConfigErrors
from mesh.plugins import Bridge, BridgeSpec, Message, Subscribe
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer, ServerTls
from tests.helpers import node_config, open_bridge, receive_n, wait_for

FAIL_WITHIN = 15.0  # seconds: a refused TLS connection is an error, never a hang


@dataclass(frozen=True)
class Pki:
    ca: Path  # signs the servers' and the client's certificates
    other_ca: Path  # signs nothing here: a wrong CA for the client
    server: ServerTls  # a certificate for 127.0.0.1, client certificates required
    cert: Path  # the node's client certificate
    key: Path

    def client(self, *, ca: Path | None = None, cert: bool = True) -> dict[str, str]:
        out = {"ca": str(ca or self.ca)}
        if cert:
            out |= {"cert": str(self.cert), "key": str(self.key)}
        return out


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(d / "ca.pem")
    other.cert_pem.write_to_path(d / "other-ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost")
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(d / "server.pem", append=i > 0)
    server.private_key_pem.write_to_path(d / "server.key")
    client = ca.issue_cert("mesh-node@example.test")
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(d / "client.pem", append=i > 0)
    client.private_key_pem.write_to_path(d / "client.key")
    return Pki(
        ca=d / "ca.pem",
        other_ca=d / "other-ca.pem",
        server=ServerTls(d / "ca.pem", d / "server.pem", d / "server.key", verify=True),
        cert=d / "client.pem",
        key=d / "client.key",
    )


@pytest.fixture
def mosquitto_tls(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "mosquitto-tls", tls=pki.server)
    broker.start()
    yield broker
    broker.close()


def _nats(tmp_path: Path, name: str, **kw: Any) -> NatsServer:
    server = NatsServer(workdir=tmp_path / name, **kw)
    server.start()
    return server


@pytest.fixture
def nats_tls(tmp_path: Path, pki: Pki) -> Iterator[NatsServer]:
    server = _nats(tmp_path, "nats-tls", tls=pki.server)
    yield server
    server.close()


def _open(spec: BridgeSpec, cfg: dict[str, Any], name: str) -> Bridge:
    bridge, _ctx = open_bridge(spec, cfg, name)
    return bridge


async def _refused(bridge: Bridge, subscriptions: list[Subscribe] | None = None) -> str:
    """The reason ``bridge.connect`` fails with (it must fail, quickly, as a BridgeError)."""
    try:
        async with asyncio.timeout(FAIL_WITHIN):
            with pytest.raises(BridgeError) as caught:
                await bridge.connect(subscriptions or [])
    finally:
        await bridge.close()
    return caught.value.reason


async def _round_trip(a: Bridge, b: Bridge, topic: str, pattern: str) -> None:
    """What ``b`` publishes arrives at ``a``'s ingress, and the other way round."""
    try:
        await a.connect([Subscribe(pattern)])
        await b.connect([Subscribe(pattern)])
        for src, dst, payload in ((b, a, b"from the broker"), (a, b, b"from the bridge")):
            assert await src.publish([Message(topic, payload)]) == [None]
            (got,) = await receive_n(dst.ctx.inbox, 1, timeout=10)  # type: ignore[attr-defined]
            assert (got.message.topic, got.message.payload) == (topic, payload)
            await got.ack()
    finally:
        await a.close()
        await b.close()


# -- MQTT ---------------------------------------------------------------------------


async def test_mqtt_over_tls_with_a_client_certificate(mosquitto_tls: Mosquitto, pki: Pki) -> None:
    assert mosquitto_tls.url.startswith("mqtts://")
    cfg = {"kind": "mqtt", "url": mosquitto_tls.url, "tls": pki.client()}
    await _round_trip(_open(MQTT, cfg, "plant-a"), _open(MQTT, cfg, "plant-b"), "tls/t", "tls/#")


async def test_mqtt_without_a_client_certificate_is_refused_clearly(
    mosquitto_tls: Mosquitto, pki: Pki
) -> None:
    cfg = {"kind": "mqtt", "url": mosquitto_tls.url, "tls": pki.client(cert=False)}
    reason = await _refused(_open(MQTT, cfg, "plant"))
    assert "TLS handshake failed" in reason and "certificate required" in reason, reason


async def test_mqtt_with_a_wrong_ca_is_refused_clearly(mosquitto_tls: Mosquitto, pki: Pki) -> None:
    cfg = {"kind": "mqtt", "url": mosquitto_tls.url, "tls": pki.client(ca=pki.other_ca)}
    reason = await _refused(_open(MQTT, cfg, "plant"))
    assert "TLS handshake failed: certificate verify failed" in reason, reason


async def test_mqtt_with_a_missing_ca_file_names_the_key_and_path(
    mosquitto_tls: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    cfg = {"kind": "mqtt", "url": mosquitto_tls.url, "tls": {"ca": str(missing)}}
    reason = await _refused(_open(MQTT, cfg, "plant"))
    assert f"tls.ca {missing}: No such file or directory" in reason, reason


# -- NATS ---------------------------------------------------------------------------


async def test_nats_over_tls_with_a_client_certificate(nats_tls: NatsServer, pki: Pki) -> None:
    assert nats_tls.url.startswith("tls://")
    cfg = {"kind": "nats", "url": nats_tls.url, "tls": pki.client()}
    await _round_trip(_open(NATS, cfg, "core-a"), _open(NATS, cfg, "core-b"), "tls.t", "tls.>")


async def test_nats_over_server_tls_with_the_ca_only(tmp_path: Path, pki: Pki) -> None:
    tls = ServerTls(pki.server.ca, pki.server.cert, pki.server.key, verify=False)
    server = _nats(tmp_path, "nats-ca-only", tls=tls)
    try:
        cfg = {"kind": "nats", "url": server.url, "tls": {"ca": str(pki.ca)}}
        await _round_trip(_open(NATS, cfg, "core-a"), _open(NATS, cfg, "core-b"), "t.x", "t.*")
    finally:
        server.close()


async def test_nats_with_a_wrong_ca_is_refused_clearly(nats_tls: NatsServer, pki: Pki) -> None:
    cfg = {"kind": "nats", "url": nats_tls.url, "tls": pki.client(ca=pki.other_ca)}
    reason = await _refused(_open(NATS, cfg, "core"))
    assert "TLS handshake failed: certificate verify failed" in reason, reason


async def test_nats_without_a_client_certificate_is_refused(nats_tls: NatsServer, pki: Pki) -> None:
    cfg = {"kind": "nats", "url": nats_tls.url, "tls": pki.client(cert=False)}
    reason = await _refused(_open(NATS, cfg, "core"))
    assert reason.startswith(f"cannot connect to {nats_tls.url}: "), reason
    # The server's alert names it, or, when a reset lost the alert (a race under
    # TLS 1.3), the reason says what the closed session most likely means.
    assert "certificate required" in reason or "set tls.cert and tls.key" in reason, reason


async def test_a_tls_url_to_a_server_without_tls_sends_nothing_in_clear(
    nats_server: NatsServer, pki: Pki
) -> None:
    """nats-py would go on in clear (it upgrades only when the server asks)."""
    url = nats_server.url.replace("nats://", "tls://")
    cfg = {"kind": "nats", "url": url, "tls": {"ca": str(pki.ca)}, "token": "clear-tok-1"}
    reason = await _refused(_open(NATS, cfg, "core"))
    assert "the server does not offer TLS" in reason, reason
    assert "clear-tok-1" not in reason


def _seed(tmp_path: Path, name: str) -> tuple[Path, str, str]:
    """A new nkey user: its seed file, the seed and the public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = tmp_path / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    return path, seed.decode(), public


async def test_nats_nkey_authentication(tmp_path: Path, pki: Pki) -> None:
    path, seed, public = _seed(tmp_path, "node")
    wrong_path, wrong_seed, _ = _seed(tmp_path, "stranger")
    server = _nats(
        tmp_path,
        "nats-nkey",
        tls=pki.server,
        config=f"authorization {{ users = [ {{nkey: {public}}} ] }}\n",
    )
    try:
        cfg = {"kind": "nats", "url": server.url, "tls": pki.client(), "nkey": str(path)}
        await _round_trip(_open(NATS, cfg, "a"), _open(NATS, cfg, "b"), "nk.x", "nk.*")
        reason = await _refused(_open(NATS, {**cfg, "nkey": str(wrong_path)}, "c"))
        assert "Authorization Violation" in reason, reason
        assert wrong_seed not in reason and seed not in reason
    finally:
        server.close()


@pytest.mark.parametrize("auth", ["user", "token"])
async def test_nats_user_password_and_token_authentication(tmp_path: Path, auth: str) -> None:
    secret = f"s3cret-{auth}-7"
    if auth == "user":
        block = f'authorization {{ users = [ {{user: alice, password: "{secret}"}} ] }}\n'
        good: dict[str, str] = {"user": "alice", "password": secret}
        bad = {"user": "alice", "password": secret + "-wrong"}
    else:
        block = f'authorization {{ token: "{secret}" }}\n'
        good, bad = {"token": secret}, {"token": secret + "-wrong"}
    server = _nats(tmp_path, f"nats-{auth}", config=block)
    try:
        cfg = {"kind": "nats", "url": server.url, **good}
        await _round_trip(_open(NATS, cfg, "a"), _open(NATS, cfg, "b"), "pw.x", "pw.*")
        reason = await _refused(_open(NATS, {**cfg, **bad}, "c"))
        assert "Authorization Violation" in reason, reason
        assert secret not in reason
    finally:
        server.close()


async def test_a_bad_nkey_or_creds_file_is_a_clear_error_without_its_contents(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    not_a_seed = tmp_path / "bad.nk"
    not_a_seed.write_text("SUNOTASEED-hush-42\n")
    # nats-py loops forever on a creds file without a JWT section: checked before.
    no_jwt = tmp_path / "bad.creds"
    no_jwt.write_text("-----BEGIN USER NKEY SEED-----\nSUNOTASEED-hush-43\n------END-----\n")
    cases = [
        ({"nkey": str(not_a_seed)}, f"nkey {not_a_seed}: not a valid NKey seed"),
        ({"creds": str(no_jwt)}, f"creds {no_jwt}: no NATS USER JWT section"),
        ({"nkey": str(tmp_path / "none.nk")}, "none.nk: No such file or directory"),
    ]
    for keys, expected in cases:
        cfg = {"kind": "nats", "url": nats_server.url, **keys}
        reason = await _refused(_open(NATS, cfg, "core"))
        assert expected in reason, reason
        assert "hush" not in reason


def _jwt(signer: nkeys.KeyPair, subject: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2): ed25519-nkey signed claims, as nsc would issue them."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "name": subject[:8],
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed = f"{header}.{b64(json.dumps(claims).encode())}"
    return f"{signed}.{b64(signer.sign(signed.encode()))}"


def _keys(prefix: int) -> tuple[bytes, nkeys.KeyPair, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    return seed, kp, kp.public_key.decode()


def _operator_mode(tmp_path: Path) -> tuple[str, Path, Path]:
    """nats-server configuration for an operator with one account (memory resolver), a
    creds file of a user of that account, and one of a user signed by a stranger."""
    _, operator, operator_pub = _keys(nkeys.PREFIX_BYTE_OPERATOR)
    _, account, account_pub = _keys(nkeys.PREFIX_BYTE_ACCOUNT)
    _, stranger, _ = _keys(nkeys.PREFIX_BYTE_ACCOUNT)
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    account_jwt = _jwt(
        operator,
        account_pub,
        {
            "type": "account",
            "limits": {**unlimited, "imports": -1, "exports": -1, "wildcards": True, "conn": -1},
        },
    )
    config = (
        f"operator: {_jwt(operator, operator_pub, {'type': 'operator'})}\n"
        f"resolver: MEMORY\nresolver_preload: {{ {account_pub}: {account_jwt} }}\n"
    )
    paths = []
    for name, issuer in (("node", account), ("stranger", stranger)):
        seed, _kp, user_pub = _keys(nkeys.PREFIX_BYTE_USER)
        user_jwt = _jwt(issuer, user_pub, {"type": "user", "pub": {}, "sub": {}, **unlimited})
        path = tmp_path / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
        )
        paths.append(path)
    return config, paths[0], paths[1]


async def test_nats_creds_authentication_in_operator_mode(tmp_path: Path, pki: Pki) -> None:
    config, creds, stranger = _operator_mode(tmp_path)
    server = _nats(tmp_path, "nats-creds", tls=pki.server, config=config)
    try:
        cfg = {"kind": "nats", "url": server.url, "tls": pki.client(), "creds": str(creds)}
        await _round_trip(_open(NATS, cfg, "a"), _open(NATS, cfg, "b"), "cr.x", "cr.*")
        reason = await _refused(_open(NATS, {**cfg, "creds": str(stranger)}, "c"))
        assert "Authorization Violation" in reason, reason
        seed = stranger.read_text().split("SEED-----\n")[1].split()[0]
        assert seed.startswith("SU") and seed not in reason
    finally:
        server.close()


# -- configuration ------------------------------------------------------------------


def _errors(brokers: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config({"node": {"id": "n"}, "brokers": brokers}, "<tls>", env={}, overrides={})
    return [str(e) for e in caught.value.errors]


def test_config_errors_for_tls_and_credentials() -> None:
    assert _errors({"p": {"kind": "mqtt", "url": "mqtts://h", "tls": {"cert": "c.pem"}}}) == [
        "brokers.p.tls: tls.cert is set without tls.key: a client certificate needs both"
    ]
    assert _errors({"c": {"kind": "nats", "url": "tls://h", "tls": {"key": "k.pem"}}}) == [
        "brokers.c.tls: tls.key is set without tls.cert: a client certificate needs both"
    ]
    assert _errors({"p": {"kind": "mqtt", "url": "mqtt://h", "tls": {"ca": "ca.pem"}}}) == [
        "brokers.p: tls needs an mqtts:// url; mqtt:// is plain TCP"
    ]
    (plain,) = _errors({"c": {"kind": "nats", "url": "nats://h", "tls": {}}})
    assert plain.startswith("brokers.c: tls needs a tls:// url"), plain
    assert _errors(
        {"c": {"kind": "nats", "token": "t-1", "user": "u", "password": "p-1", "nkey": "k"}}
    ) == [
        "brokers.c: token and user and nkey are set: use at most one of token, "
        "user (+ password), nkey, creds"
    ]
    assert _errors({"c": {"kind": "nats", "nkey": "k", "creds": "c"}}) == [
        "brokers.c: nkey and creds are set: use at most one of token, user (+ password), "
        "nkey, creds"
    ]
    assert _errors({"c": {"kind": "nats", "password": "p-2"}}) == [
        "brokers.c: password is set without user"
    ]
    assert _errors({"p": {"kind": "mqtt", "url": "mqtts://h", "tls": {"crt": "c"}}}) == [
        "brokers.p.tls.crt: unknown key (remove it or check its spelling)"
    ]


def test_no_secret_shows_in_the_configuration() -> None:
    secrets = ["mq-pw-1", "nats-pw-2", "nats-tok-3"]
    cfg = parse_config(
        {
            "node": {"id": "n"},
            "brokers": {
                "plant": {
                    "kind": "mqtt",
                    "url": "mqtts://h:8883",
                    "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
                    "username": "u",
                    "password": secrets[0],
                },
                "core": {
                    "kind": "nats",
                    "url": "tls://h:4222",
                    "tls": {"ca": "ca.pem"},
                    "user": "u",
                    "password": secrets[1],
                },
                "bus": {"kind": "nats", "token": secrets[2]},
                "keyed": {"kind": "nats", "url": "tls://h", "creds": "nats.creds"},
            },
        },
        "<secrets>",
        env={},
        overrides={},
    )
    shown = [repr(cfg), str(cfg), cfg.model_dump_json(), repr(cfg.brokers)]
    for text in shown:
        for secret in secrets:
            assert secret not in text
    plant = cfg.brokers["plant"]
    assert plant.tls is not None and str(plant.tls.key) == "k.pem"  # type: ignore[attr-defined]
    assert str(cfg.brokers["keyed"].creds) == "nats.creds"  # type: ignore[attr-defined]


# -- the node -----------------------------------------------------------------------


async def test_a_node_retries_a_refused_tls_broker_and_keeps_serving(
    mosquitto_tls: Mosquitto,
    nats_tls: NatsServer,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A TLS failure is a connect error like any other: reported once with its
    reason, retried with backoff by the bridge's supervisor, the node unharmed."""
    cfg = node_config(
        tmp_path,
        "tls-node",
        brokers={
            "plant": {"kind": "mqtt", "url": mosquitto_tls.url, "tls": {"ca": str(pki.ca)}},
            "core": {"kind": "nats", "url": nats_tls.url, "tls": pki.client()},
        },
    )
    caplog.set_level(logging.WARNING, logger="mesh.runtime.lifecycle")
    async with Node(cfg).serve() as node:
        await wait_for(lambda: node.broker_connected("core"), what="core connected")
        await wait_for(
            lambda: node.metrics.get("mesh_task_restarts_total", task="bridge[plant]") >= 3,
            what="plant retried",
        )
        assert not node.broker_connected("plant")
    logged = [r.getMessage() for r in caplog.records if "bridge[plant]" in r.getMessage()]
    assert any("TLS handshake failed" in m and "certificate required" in m for m in logged), logged


def test_every_broker_key_is_described_in_the_schema() -> None:
    defs = json_schema()["$defs"]
    for model in ("MqttBrokerConfig", "NatsBrokerConfig", "ClientTls"):
        props = defs[model]["properties"]
        assert not [k for k, v in props.items() if not v.get("description")], model
    assert defs["NatsBrokerConfig"]["properties"]["token"]["anyOf"][0]["writeOnly"] is True
