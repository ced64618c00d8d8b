"""docs/security.md's mutual-TLS walkthrough, run as written.

The ``openssl`` commands of the page make the CA, the three sites'
certificates and the tokens in a fresh directory; the three configurations
of the page are loaded as they are (only the ports, the nats-server URL and
the data directories are the test's); the nodes link over mTLS and an event
published at site-a reaches site-c's subscription through site-b. If the
page's commands or configs stop working, this fails.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import nats
import pytest

from mesh.config import MeshConfig, load_config
from mesh.core.codec import Mode, encode_nats
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import NatsServer, free_port
from tests.helpers import nats_collect, node_config, wait_for

pytestmark = pytest.mark.timeout(90)

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def block(name: str) -> str:
    """The fenced block right after ``<!-- walkthrough:NAME -->`` in the page."""
    text = DOC.read_text()
    m = re.search(rf"<!-- walkthrough:{re.escape(name)} -->\s*```\w+\n(.*?)```", text, re.DOTALL)
    assert m, f"docs/security.md has no walkthrough block {name!r}"
    return m.group(1)


async def test_the_three_site_mtls_walkthrough_works_as_written(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = subprocess.run(  # noqa: ASYNC221 - before any node runs
        ["bash", "-c", block("openssl")], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "site-c.pem: OK" in run.stdout
    env = dict(line.split("=", 1) for line in (tmp_path / "tokens.env").read_text().split())
    assert set(env) == {"MESH_TOKEN_A", "MESH_TOKEN_C"}
    ports = {"7411": free_port(), "7412": free_port(), "7413": free_port()}
    monkeypatch.chdir(tmp_path)  # the configs' paths are relative, as in the page
    configs = {}
    for site in ("site-a", "site-b", "site-c"):
        text = block(f"{site}.yaml").replace("nats://127.0.0.1:4222", nats_server.url)
        for doc_port, port in ports.items():
            text = text.replace(f"127.0.0.1:{doc_port}", f"127.0.0.1:{port}")
        path = tmp_path / f"{site}.yaml"
        path.write_text(text)
        configs[site] = load_config(path, env=env)

    async with contextlib.AsyncExitStack() as stack:
        b = await stack.enter_async_context(Node(configs["site-b"]).serve())
        a = await stack.enter_async_context(Node(configs["site-a"]).serve())
        c = await stack.enter_async_context(Node(configs["site-c"]).serve())
        got = await stack.enter_async_context(
            nats_collect(nats_server.url, "alerts.>", key=lambda m: m.subject)
        )
        await wait_for(lambda: {"site-a", "site-c"} <= set(b.sessions), 15, "both mTLS links")
        assert b.sessions["site-a"].certificate is not None, "site-a presented its certificate"
        # site-c's interest is narrowed at site-b by its export for site-c, and
        # reaches site-a narrowed by site-b's import for site-a.
        await wait_for(
            lambda: (
                {(r.origin, r.pattern) for r in b.table.routes() if r.next_hop == "site-c"}
                == {("site-c", "site-a/alerts/#")}
            ),
            10,
            "site-c's narrowed interest at site-b",
        )
        await wait_for(
            lambda: any(r.origin == "site-c" for r in a.table.routes()), 10, "the route at site-a"
        )
        await a.ready()
        await c.ready()
        ev = Event(
            {"specversion": "1.0", "id": "fire-1", "source": "/site-a", "type": "alert"},
            b"{}",
            json_implied=True,
        )
        payload, headers = encode_nats(ev, Mode.BINARY)
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        await nc.publish("site-a.alerts.fire", payload, headers=headers)
        await nc.flush()
        # As the page says: the subject names the origin node and the event id.
        await wait_for(lambda: "alerts.site-a.fire-1" in got, 15, "the alert at site-c")


async def test_a_link_token_rotates_as_the_page_says_without_a_refusal(tmp_path: Path) -> None:
    """Rotation as the page describes it: the acceptor takes both tokens, the
    dialer switches (one redial), the acceptor drops the old one; no refusal."""
    old, new = "old-token-0123456789", "new-token-9876543210"

    def b_cfg(*tokens: str) -> MeshConfig:
        accept = [{"id": "site-a", "token": t, "import": ["site-a/#"]} for t in tokens]
        return node_config(tmp_path, "site-b", accept=accept)

    def a_cfg(port: int, token: str) -> MeshConfig:
        peer = {"id": "site-b", "url": f"ws://127.0.0.1:{port}/mesh", "token": token}
        return node_config(tmp_path, "site-a", peers=[peer])

    async with Node(b_cfg(old)).serve() as b, Node(a_cfg(b.port, old)).serve() as a:
        await wait_for(lambda: "site-a" in b.sessions, what="the link with the old token")
        first = b.sessions["site-a"]
        await b.reload(b_cfg(old, new))  # 1. the acceptor takes both
        assert b.sessions.get("site-a") is first
        await a.reload(a_cfg(b.port, new))  # 2. the dialer switches: one redial
        await wait_for(lambda: b.sessions.get("site-a") not in (None, first), what="the new link")
        second = b.sessions["site-a"]
        await b.reload(b_cfg(new))  # 3. the acceptor drops the old token
        assert b.sessions.get("site-a") is second and second.token == new
        assert b.metrics.total("mesh_link_closed_by_reload_total") == 0
        assert b.metrics.total("mesh_link_refused_total") == 0
