"""Authenticated APIs: bearer tokens with scopes, else the node's own host only.

A real node, real aiohttp clients. The non-loopback client is this machine
itself, dialling one of its own non-loopback addresses (the traffic never
leaves the host); a unit case of the same check with a mocked peer address
covers machines that have no such address.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mesh.config import load_config
from mesh.runtime.node import Node
from tests.helpers import node_config, unique, wait_for

INGEST = "ingest-" + "a1" * 16
OPS = "ops-" + "b2" * 16
ADMIN = "admin-" + "c3" * 16
NEW_INGEST = "ingest2-" + "d4" * 16
SECRETS = (INGEST, OPS, ADMIN, NEW_INGEST)
TOKENS = [
    {"token": INGEST, "scopes": ["publish"]},
    {"token": OPS, "scopes": ["read"]},
    {"token": ADMIN, "scopes": ["read", "admin"]},
]


def event_headers(tag: str, token: str | None = None) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": unique("e"),
        "ce-source": "/t",
        "ce-type": "t",
        "content-type": "text/plain",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


class Seen:
    """Every response body and header the test received, to search for secrets."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def call(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        token: str | None = None,
        **kw: Any,
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        headers = {**bearer(token), **kw.pop("headers", {})}
        async with http.request(method, url, headers=headers, **kw) as r:
            body = await r.text()
            self.texts.append(body)
            self.texts.extend(f"{k}: {v}" for k, v in r.headers.items())
            return r.status, body, r


def http_node(tmp_path: Path, tag: str, **sections: Any) -> Node:
    return Node(
        node_config(
            tmp_path,
            "solo",
            brokers={"web": {"kind": "http"}},
            ingress=[{"from": "web", "topic": f"{tag}/#"}],
            **sections,
        )
    )


def assert_no_secret(texts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    logged = [r.getMessage() for r in caplog.records]
    logged += [str(r.__dict__) for r in caplog.records]
    for secret in SECRETS:
        assert not any(secret in t for t in texts), f"a response shows {secret[:8]}..."
        assert not any(secret in t for t in logged), f"the log shows {secret[:8]}..."


async def test_events_need_a_token_with_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tag = unique()
    seen = Seen()
    async with (
        http_node(tmp_path, tag, api={"tokens": TOKENS}).serve() as node,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{node.port}/events/{tag}/x"
        # Loopback does not bypass tokens once they are configured.
        status, body, r = await seen.call(http, "POST", url, data=b"1", headers=event_headers(tag))
        assert status == 401, body
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.content_type == "application/problem+json"
        assert "bearer token" in body
        status, _, r = await seen.call(
            http, "POST", url, "not-a-token", data=b"1", headers=event_headers(tag)
        )
        assert status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        status, _, r = await seen.call(
            http, "POST", url, data=b"1", headers={**event_headers(tag), "Authorization": "Basic x"}
        )
        assert status == 401
        status, body, r = await seen.call(
            http, "POST", url, OPS, data=b"1", headers=event_headers(tag)
        )
        assert status == 403 and r.content_type == "application/problem+json"
        assert "'publish'" in body
        # Each refusal is counted, by status; the log names the client and the reason.
        m = node.metrics
        assert m.get("mesh_api_refused_total", status="401", path="/events") == 3
        assert m.get("mesh_api_refused_total", status="403", path="/events") == 1
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("api ")]
        assert any("401 for 127.0.0.1 on /events" in line for line in logged), logged
        status, body, _ = await seen.call(
            http, "POST", url, INGEST, data=b"1", headers=event_headers(tag)
        )
        assert status == 202, body
        assert await wait_for(lambda: node.metrics.total("mesh_ingress_events_total") >= 1)
        # A refused event is dead-lettered; its entry keeps no Authorization header.
        broken = {**event_headers(tag), "ce-type": ""}
        status, body, _ = await seen.call(http, "POST", url, INGEST, data=b"1", headers=broken)
        assert status == 400, body
        base = f"http://127.0.0.1:{node.port}/api/dlq"
        status, body, _ = await seen.call(http, "GET", base, ADMIN)
        assert status == 200 and '"total": 1' in body, body
        entry_id = (await (await http.get(base, headers=bearer(ADMIN))).json())["entries"][0]["id"]
        status, body, _ = await seen.call(http, "GET", f"{base}/{entry_id}", OPS)
        assert status == 200 and "ce-id" in body, body
    assert_no_secret(seen.texts, caplog)


async def test_the_api_needs_read_to_show_and_admin_to_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tag = unique()
    seen = Seen()
    cfg_file = tmp_path / "solo.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "solo", "listen": "127.0.0.1:0", "data_dir": str(tmp_path / "d")},
                "brokers": {"web": {"kind": "http"}},
                "ingress": [{"from": "web", "topic": f"{tag}/#"}],
                "api": {"tokens": TOKENS},
            }
        )
    )
    node = Node(load_config(cfg_file, env={}, overrides={}), source=str(cfg_file))
    async with node.serve(), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{node.port}"
        reads = ("/api/stats", "/api/routes", "/api/peers", "/api/dlq", "/api/egress")
        for path in (*reads, "/api/asyncapi"):
            assert (await seen.call(http, "GET", base + path))[0] == 401, path
            assert (await seen.call(http, "GET", base + path, INGEST))[0] == 403, path
            assert (await seen.call(http, "GET", base + path, OPS))[0] == 200, path
            assert (await seen.call(http, "GET", base + path, ADMIN))[0] == 200, path
        changes = [
            ("POST", "/api/reload", 200),
            ("POST", "/api/dlq/redrive", 200),
            ("DELETE", "/api/dlq", 200),
            ("POST", "/api/egress/0/resume", 404),  # no egress rule 0: past the check
        ]
        for method, path, allowed in changes:
            assert (await seen.call(http, method, base + path))[0] == 401, path
            status, body, _ = await seen.call(http, method, base + path, OPS)
            assert status == 403 and "'admin'" in body, path
            assert (await seen.call(http, method, base + path, INGEST))[0] == 403, path
            status, body, _ = await seen.call(http, method, base + path, ADMIN)
            assert status == allowed, (path, body)
        # Open to anyone: no payloads, no secrets.
        for path in ("/healthz", "/api/health", "/metrics"):
            assert (await seen.call(http, "GET", base + path))[0] == 200, path
        status, body, _ = await seen.call(http, "GET", base + "/healthz")
        assert '"status": "ok"' in body
    assert_no_secret(seen.texts, caplog)


def own_address() -> str | None:
    """A non-loopback IPv4 address of this machine (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


SPARE_ADDRESS = "198.18.77.1"  # RFC 2544 benchmarking range, put on lo only for the test


@pytest.fixture
def non_loopback_address() -> Iterator[str]:
    """A non-loopback address of this machine; one added to ``lo`` when it has none."""
    address = own_address()
    if address is not None:
        yield address
        return
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail(
            "this machine has no non-loopback address; the test adds one to lo, "
            "which needs root and iproute2 (apt-get install iproute2)"
        )
    add = ["ip", "addr", "add", f"{SPARE_ADDRESS}/32", "dev", "lo"]
    subprocess.run(add, check=True)
    try:
        yield SPARE_ADDRESS
    finally:
        subprocess.run(["ip", "addr", "del", f"{SPARE_ADDRESS}/32", "dev", "lo"], check=False)


async def test_without_tokens_only_the_nodes_own_host_may_publish_or_administer(
    tmp_path: Path, non_loopback_address: str
) -> None:
    address = non_loopback_address
    tag = unique()
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"web": {"kind": "http"}},
        ingress=[{"from": "web", "topic": f"{tag}/#"}],
    )
    cfg.node.listen = "0.0.0.0:0"
    async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
        local = f"http://127.0.0.1:{node.port}"
        other = f"http://{address}:{node.port}"
        r = await http.post(f"{local}/events/{tag}/x", data=b"1", headers=event_headers(tag))
        assert r.status == 202
        assert (await http.get(f"{local}/api/stats")).status == 200
        assert (await http.delete(f"{local}/api/dlq")).status == 200
        # The same requests from this host's non-loopback address: refused.
        r = await http.post(f"{other}/events/{tag}/x", data=b"1", headers=event_headers(tag))
        assert r.status == 403 and r.content_type == "application/problem+json"
        assert "node's own host" in (await r.json())["detail"]
        for method, path in (
            ("GET", "/api/stats"),
            ("GET", "/api/dlq"),
            ("POST", "/api/reload"),
            ("DELETE", "/api/dlq"),
            ("POST", "/api/egress/0/resume"),
        ):
            r = await http.request(method, other + path)
            assert r.status == 403, path
            assert r.content_type == "application/problem+json"
        # A token does not help when none is configured.
        r = await http.get(f"{other}/api/stats", headers=bearer(ADMIN))
        assert r.status == 403
        for path in ("/healthz", "/api/health", "/metrics"):
            assert (await http.get(other + path)).status == 200, path
        assert node.metrics.total("mesh_ingress_events_total") == 1


async def test_tokens_reload_without_dropping_links_and_are_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tag = unique()
    seen = Seen()
    cfg_file = tmp_path / "b.yaml"
    data: dict[str, Any] = {
        "node": {"id": "site-b", "listen": "127.0.0.1:0", "data_dir": str(tmp_path / "b")},
        "brokers": {"web": {"kind": "http"}},
        "accept": [{"id": "site-a", "token": "link-token"}],
        "ingress": [{"from": "web", "topic": f"{tag}/#"}],
        "api": {"tokens": [{"token": "${INGEST}", "scopes": ["publish"]}, TOKENS[2]]},
    }
    cfg_file.write_text(yaml.safe_dump(data))
    env = {"INGEST": INGEST}
    b = Node(load_config(cfg_file, env=env, overrides={}), source=str(cfg_file))
    async with b.serve():
        a_cfg = node_config(
            tmp_path,
            "site-a",
            brokers={"bus": {"kind": "memory", "name": tag}},
            peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": "link-token"}],
            egress=[{"to": "bus", "topic": f"{tag}/#", "target": "out/{1}"}],
        )
        async with Node(a_cfg).serve() as a, aiohttp.ClientSession() as http:
            await wait_for(lambda: "site-a" in b.sessions and "site-b" in a.sessions, what="link")
            link_b, link_a = b.sessions["site-a"], a.sessions["site-b"]
            url = f"http://127.0.0.1:{b.port}/events/{tag}/x"
            assert (await seen.call(http, "POST", url, INGEST, headers=event_headers(tag)))[
                0
            ] == 202
            # Rotate the ingest token: the file now names another one.
            data["api"]["tokens"][0]["token"] = NEW_INGEST
            cfg_file.write_text(yaml.safe_dump(data))
            await b.reload(load_config(cfg_file, env=env, overrides={}))
            assert (await seen.call(http, "POST", url, INGEST, headers=event_headers(tag)))[
                0
            ] == 401
            status, body, _ = await seen.call(
                http, "POST", url, NEW_INGEST, headers=event_headers(tag)
            )
            assert status == 202, body
            # Reload through the API and the CLI, with the admin token.
            status, body, _ = await seen.call(
                http, "POST", f"http://127.0.0.1:{b.port}/api/reload", ADMIN
            )
            assert status == 200, body
            code, out = await asyncio.to_thread(cli, b.port, "reload", token=ADMIN)
            seen.texts.append(out)
            assert code == 0 and "reloaded" in out, out
            for path in ("/api/stats", "/api/peers", "/api/routes", "/api/dlq", "/metrics"):
                await seen.call(http, "GET", f"http://127.0.0.1:{b.port}{path}", ADMIN)
            # The link never dropped: the same sessions on both sides.
            await asyncio.sleep(0.3)
            assert b.sessions.get("site-a") is link_b and a.sessions.get("site-b") is link_a
    assert_no_secret(seen.texts, caplog)


def cli(
    port: int, *args: str, token: str | None = None, env_token: str | None = None
) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "MESH_API_TOKEN"}
    if env_token is not None:
        env["MESH_API_TOKEN"] = env_token
    extra = ["--token", token] if token is not None else []
    proc = subprocess.run(
        [sys.executable, "-m", "mesh.cli", *args, "--url", f"http://127.0.0.1:{port}", *extra],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def test_cli_sends_its_token_and_says_so_in_one_line_when_refused(tmp_path: Path) -> None:
    tag = unique()
    async with http_node(tmp_path, tag, api={"tokens": TOKENS}).serve() as node:
        port = node.port
        for args in (("dlq", "list"), ("egress",), ("routes",), ("peers",)):
            code, out = await asyncio.to_thread(cli, port, *args)
            assert code != 0 and "401" in out and "--token" in out, out
            assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
            code, out = await asyncio.to_thread(cli, port, *args, token=OPS)
            assert code == 0, out
            code, out = await asyncio.to_thread(cli, port, *args, env_token=OPS)
            assert code == 0, out
        for args in (("dlq", "purge"), ("dlq", "redrive", "--all"), ("reload",)):
            code, out = await asyncio.to_thread(cli, port, *args, token=OPS)
            assert code != 0 and "403" in out and "'admin'" in out, out
            assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
            assert OPS not in out
        code, out = await asyncio.to_thread(cli, port, "dlq", "purge", env_token=ADMIN)
        assert code == 0 and "purged: 0" in out, out
