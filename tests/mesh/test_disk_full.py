"""A full disk is backpressure, not a failure (issue 11, acceptance 3).

Node ``b``'s data directory is a small tmpfs. Node ``a`` ingests from its
NATS and forwards to ``b`` over a peer link. While ``b``'s disk is full it
reports ``mesh_store_full`` 1, stops acknowledging (``a`` keeps the events in
its outbox), and keeps the link up instead of redialling; once space is
freed everything drains, each event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.mesh.meshnet import MeshNet, settle


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the disk-full test mounts a tmpfs and must run as root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = path / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return ballast


def gauge(net: MeshNet, name: str, metric: str) -> float:
    read = net.node(name).metrics.gauges[metric]
    return sum(read().values())


async def test_a_full_disk_at_the_receiving_node_is_backpressure(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "b", 64):
        interests = {"b": ["in/to/b/#"]}
        async with MeshNet(tmp_path, ["b", "a"], [("a", "b")], interests) as net:
            await net.wait_converged()
            for i in range(20):
                await net.publish("a", "in.to.b.x", f"before-{i}")
            await net.flush()
            await settle(net, 20)

            ballast = fill(tmp_path / "b")
            sessions = net.node("b").metrics.get("mesh_link_sessions_total", peer="a")
            for i in range(300):
                await net.publish("a", "in.to.b.x", f"full-{i}")
            await net.flush()
            await wait_for(
                lambda: gauge(net, "b", "mesh_store_full") == 1, 20, "b to report a full store"
            )
            # Ten seconds of a full disk: the link stays up, no redial storm.
            for _ in range(20):
                await asyncio.sleep(0.5)
                assert "a" in net.node("b").sessions
            again = net.node("b").metrics.get("mesh_link_sessions_total", peer="a")
            assert again - sessions <= 1, again - sessions
            assert len(net.received()["b"]) < 320  # really held back

            ballast.unlink()
            await settle(net, 320, timeout=60)
            got = net.received()["b"]
            assert sorted(got) == sorted(
                [f"before-{i}" for i in range(20)] + [f"full-{i}" for i in range(300)]
            )
            assert len(got) == len(set(got)), "an event arrived twice"
            await wait_for(
                lambda: gauge(net, "b", "mesh_store_full") == 0, 20, "b to leave the full state"
            )
