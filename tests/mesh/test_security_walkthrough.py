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

from mesh.config import load_config
from mesh.core.codec import Mode, encode_nats
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import NatsServer, free_port
from tests.helpers import nats_collect, wait_for

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
        got = await stack.enter_async_context(nats_collect(nats_server.url, "alerts.>"))
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
        await wait_for(lambda: "fire-1" in got, 15, "the alert at site-c")
