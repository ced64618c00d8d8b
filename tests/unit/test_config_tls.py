"""node.tls and peers[].tls: files are checked under their key, combinations are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trustme

from mesh.config import json_schema, parse_config
from mesh.core.errors import ConfigErrors


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return {k: str(v) for k, v in files.items()}


def config(node_tls: Any = None, peer: dict[str, Any] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"id": "site-a"}
    if node_tls is not None:
        node["tls"] = node_tls
    data: dict[str, Any] = {"node": node}
    if peer is not None:
        data["peers"] = [{"id": "site-b", "token": "t", **peer}]
    return data


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, env={}, overrides={})
    return [str(e) for e in info.value.errors]


def test_a_valid_node_and_peer_tls_load(pem: dict[str, str]) -> None:
    cfg = parse_config(
        config(
            {**pem, "client_auth": "required"},
            {"url": "wss://b.example.net:7401/mesh", "tls": pem},
        ),
        env={},
        overrides={},
    )
    assert cfg.node.tls is not None and cfg.node.tls.client_auth == "required"
    assert cfg.peers[0].tls is not None and str(cfg.peers[0].tls.ca) == pem["ca"]
    plain = parse_config(config({"cert": pem["cert"], "key": pem["key"]}), env={}, overrides={})
    assert plain.node.tls is not None and plain.node.tls.client_auth == "none"


def test_missing_files_are_errors_naming_the_key(pem: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    got = errors(config({**pem, "cert": missing}))
    assert got == [f"node.tls.cert: cannot read {missing}: No such file or directory"]
    got = errors(config(pem, {"url": "wss://b:1/mesh", "tls": {**pem, "ca": missing}}))
    assert got == [f"peers[0].tls.ca: cannot read {missing}: No such file or directory"]


def test_a_key_of_another_certificate_and_a_bad_ca_are_errors(
    pem: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(other))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    got = errors(config({**pem, "key": str(other), "ca": str(junk)}))
    assert len(got) == 2
    assert got[0].startswith("node.tls.cert: certificate and key do not load:")
    assert got[1].startswith("node.tls.ca: CA certificates do not load:")


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_client_auth_without_a_ca_is_an_error(pem: dict[str, str], mode: str) -> None:
    got = errors(config({"cert": pem["cert"], "key": pem["key"], "client_auth": mode}))
    assert got == [
        f"node.tls.ca: client_auth {mode} needs the CA that client certificates chain to "
        "(set node.tls.ca, or client_auth: none)"
    ]


def test_a_tls_block_on_a_ws_url_is_an_error(pem: dict[str, str]) -> None:
    got = errors(config(peer={"url": "ws://b:1/mesh", "tls": {"ca": pem["ca"]}}))
    assert got == [
        "peers[0].tls: a tls block needs a wss:// url (url is ws://; use wss://, or remove tls)"
    ]


def test_unknown_keys_bad_choices_and_half_a_key_pair(pem: dict[str, str]) -> None:
    got = errors(config({**pem, "client_auth": "sometimes", "verify": True}))
    assert any(e.startswith("node.tls.client_auth:") for e in got), got
    assert "node.tls.verify: unknown key (remove it or check its spelling)" in got
    got = errors(config(peer={"url": "wss://b:1/mesh", "tls": {"cert": pem["cert"]}}))
    assert got == ["peers[0].tls: tls.cert is set without tls.key: a client certificate needs both"]


def test_the_schema_describes_every_tls_key() -> None:
    defs = json_schema()["$defs"]
    for name in ("NodeTls", "ClientTls"):
        props = defs[name]["properties"]
        assert defs[name]["additionalProperties"] is False
        assert all(p.get("description") for p in props.values()), json.dumps(props)
    assert set(defs["NodeTls"]["properties"]) == {"cert", "key", "ca", "client_auth"}
    assert set(defs["ClientTls"]["properties"]) == {"ca", "cert", "key"}
