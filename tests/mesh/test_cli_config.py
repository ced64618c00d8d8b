"""The CLI finds a node from its configuration file without the file's secrets."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from mesh.config import load_config
from mesh.runtime.node import Node
from mesh.testing import free_port
from tests.mesh.test_link_tls import cli


async def test_mesh_peers_with_c_needs_only_the_node_section(tmp_path: Path) -> None:
    port = free_port()
    far = free_port()
    path = tmp_path / "node.yaml"
    path.write_text(
        f"node: {{id: solo, listen: '127.0.0.1:{port}', data_dir: '{tmp_path / 'data'}'}}\n"
        "peers:\n"
        f"  - {{id: far, url: 'ws://127.0.0.1:{far}/mesh', token: '${{CLI_TEST_PEER_TOKEN}}'}}\n"
    )
    assert "CLI_TEST_PEER_TOKEN" not in os.environ
    cfg = load_config(path, env={"CLI_TEST_PEER_TOKEN": "only-the-node-knows"})
    async with Node(cfg).serve():
        code, out, err = await cli("peers", "--json", "-c", str(path))
        assert code == 0, err
        assert [p["id"] for p in orjson.loads(out)["peers"]] == ["far"]
        assert "only-the-node-knows" not in out + err
    # A broken node section is an error naming the key, exit 2.
    path.write_text("node: {id: solo, listen: 'nowhere'}\n")
    code, _out, err = await cli("peers", "-c", str(path))
    assert code == 2 and "node.listen" in err, err
