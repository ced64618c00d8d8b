"""The operator CLI against running nodes: status, routes, peers, publish and tail.

The issue's acceptance: each command is run as a real ``mesh`` process against
real nodes (two linked over a real link, each with its own nats-server), with
and without ``--json``; a node that cannot be reached or refuses makes it exit
1; ``mesh status --check`` exits 1 while a configured peer is not linked and 0
once it is; ``mesh tail`` prints what enters the node and ends cleanly on
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mesh.runtime.node import Node
from mesh.runtime.tail import MAX_TAIL_CLIENTS
from mesh.testing import free_port
from tests.helpers import node_config, wait_for
from tests.mesh.meshnet import MeshNet

pytestmark = pytest.mark.timeout(90)

READ = "read-" + "e5" * 16
ADMIN = "admin-" + "f6" * 16


def url(node: Node) -> str:
    return f"http://127.0.0.1:{node.port}"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MESH_API_TOKEN"}


async def start(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )


async def mesh(*argv: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run ``mesh ARGV`` to its end: (exit code, stdout, stderr)."""
    proc = await start(*argv)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[MeshNet]:
    """a dials b; both subscribe to in/#, b also to other/+."""
    interests = {"a": ["in/#"], "b": ["in/#", "other/+"]}
    async with MeshNet(tmp_path, ["a", "b"], [("a", "b")], interests) as net:
        await net.wait_converged()
        yield net


async def test_status_shows_the_node_at_a_glance(net: MeshNet) -> None:
    a = net.node("a")
    code, out, err = await mesh("status", "--node", url(a))
    assert code == 0, err
    assert "node a" in out and "ready" in out and "NOT READY" not in out
    for heading in ("BROKER", "LINK", "CANARY", "RTT MS", "OUTBOX", "EGRESS"):
        assert heading in out, out
    [link] = [line for line in out.splitlines() if line.split()[:1] == ["b"]]
    assert "up" in link.split(), link
    assert "peer:b" in out  # the link's outbox
    assert (await mesh("status", "--check", "--node", url(a)))[0] == 0

    code, out, err = await mesh("status", "--json", "--url", url(a))  # the old spelling
    assert code == 0, err
    body = json.loads(out)
    assert body["node"] == "a" and body["ready"] is True and body["reasons"] == []
    assert [p["id"] for p in body["peers"]] == ["b"] and body["dead_letters"] == 0


async def test_status_check_fails_while_a_configured_peer_is_not_linked(tmp_path: Path) -> None:
    port = free_port()  # far is not there yet
    solo = node_config(
        tmp_path, "solo", peers=[{"id": "far", "url": f"ws://127.0.0.1:{port}/mesh", "token": "t"}]
    )
    far = node_config(
        tmp_path,
        "far",
        node={"id": "far", "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "far")},
        accept=[{"id": "solo", "token": "t"}],
    )
    async with Node(solo).serve() as node:
        code, out, err = await mesh("status", "--check", "--node", url(node))
        assert code == 1, (out, err)
        assert "NOT READY" in out and "peer:far" in out  # still printed
        code, out, _err = await mesh("status", "--check", "--json", "--node", url(node))
        assert code == 1 and json.loads(out)["ready"] is False
        assert (await mesh("status", "--node", url(node)))[0] == 0  # without --check: shown
        async with Node(far).serve():
            await wait_for(lambda: "far" in node.sessions, 30, "the link to far")
            code, out, err = await mesh("status", "--check", "--node", url(node))
            assert code == 0, (out, err)
            assert "NOT READY" not in out


async def test_routes_has_one_row_per_route_with_its_rule_name(net: MeshNet) -> None:
    b = net.node("b")
    code, out, err = await mesh("routes", "--json", "--node", url(b))
    assert code == 0, err
    rows = json.loads(out)["routes"]
    local = [r for r in rows if r["origin"] == "b"]
    assert [(r["rule"], r["pattern"]) for r in local] == [
        (w.rule.name, w.rule.pattern.text) for w in b.egress_workers()
    ]
    learned = [r for r in rows if r["origin"] != "b"]
    assert [(r["origin"], r["pattern"], r["next_hop"]) for r in learned] == [("a", "in/#", "a")]
    keys = [(r["rule"], r["pattern"], json.dumps(r["filter"]), r["origin"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3

    code, out, err = await mesh("routes", "--node", url(b))
    assert code == 0, err
    lines = out.splitlines()
    assert "RULE" in lines[0]
    for w in b.egress_workers():
        assert sum(line.split()[:1] == [w.rule.name] for line in lines) == 1, out
    assert sum(line.startswith("from a") for line in lines) == 1, out
    assert len([line for line in lines[2:] if line.strip()]) == 3, out  # no duplicate rows


async def test_peers_with_and_without_json(net: MeshNet) -> None:
    a = net.node("a")
    code, out, err = await mesh("peers", "--node", url(a))
    assert code == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith("b ")]
    assert row[:3] == ["b", "dialed", "up"], out
    code, out, err = await mesh("peers", "--json", "--node", url(a))
    assert code == 0, err
    assert [(p["id"], p["state"]) for p in json.loads(out)["peers"]] == [("b", "up")]


async def test_publish_reaches_the_subscribers_local_and_remote(net: MeshNet) -> None:
    a = net.node("a")
    first = str(uuid.uuid4())
    code, out, err = await mesh(
        "publish", "in/cli/1", "--data", '{"k": 1}', "--id", first, "--node", url(a)
    )
    assert (code, out.strip()) == (0, first), err
    code, out, err = await mesh(
        "publish", "in/cli/2", "--data", "plain text", "--json", "--node", url(a)
    )
    assert code == 0, err
    answer = json.loads(out)
    second = answer["id"]
    assert answer["topic"] == "in/cli/2" and answer["routed"] == 1
    # Delivered by a's own egress and, over the link, by b's.
    await wait_for(
        lambda: all({first, second} <= set(net.members[n].received) for n in ("a", "b")),
        what="both events at a's and b's NATS",
    )
    code, _out, err = await mesh("publish", "in/+", "--data", "x", "--node", url(a))
    assert code == 1 and "topic" in err and "pattern" in err, err
    code, _out, err = await mesh("publish", "in/x", "--type", "", "--node", url(a))
    assert code == 1 and "type" in err, err


async def _tailing(node: Node, n: int = 1) -> None:
    await wait_for(lambda: len(node.router.tail.subscribers) == n, 15, f"{n} tail client(s)")


async def test_tail_prints_the_events_entering_the_node(net: MeshNet) -> None:
    a = net.node("a")
    proc = await start("tail", "in/#", "--count", "2", "--json", "--node", url(a))
    try:
        await _tailing(a)
        await net.publish("a", "in.t.local", "ev-local")  # from a's broker
        await net.publish("b", "in.t.remote", "ev-remote")  # from b, over the link
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err
    frames = [json.loads(line) for line in out.decode().splitlines()]
    assert sorted((f["topic"], f["origin"], f["attributes"]["id"]) for f in frames) == [
        ("in/t/local", "a", "ev-local"),
        ("in/t/remote", "b", "ev-remote"),
    ]
    assert all(f["data"] == "{}" for f in frames)
    await _tailing(a, 0)  # closing the socket unsubscribed

    # Without --json: one line per event; the filter leaves out the other type.
    proc = await start(
        "tail", "in/#", "--filter", '{"exact": {"type": "t"}}', "--count", "1", "--node", url(a)
    )
    try:
        await _tailing(a)
        code, _out, err_s = await mesh("publish", "in/t/x", "--type", "other", "--node", url(a))
        assert code == 0, err_s
        await net.publish("a", "in.t.wanted", "ev-wanted")
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err
    [line] = out.decode().splitlines()
    assert line.split()[:4] == ["in/t/wanted", "a", "t", "ev-wanted"], line


async def test_tail_ends_cleanly_on_ctrl_c(net: MeshNet) -> None:
    a = net.node("a")
    proc = await start("tail", "in/#", "--node", url(a))
    try:
        await _tailing(a)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and out == b"", err
    await _tailing(a, 0)


async def test_tail_refuses_a_bad_pattern_or_filter_and_bounds_its_clients(
    tmp_path: Path,
) -> None:
    async with Node(node_config(tmp_path, "solo")).serve() as node:
        code, _out, err = await mesh("tail", "a/#/b", "--node", url(node))
        assert code == 1 and "'#' must be the last level" in err, err
        code, _out, err = await mesh("tail", "a/#", "--filter", '{"nope": 1}', "--node", url(node))
        assert code == 1 and "unknown filter dialect 'nope'" in err, err
        code, _out, err = await mesh("tail", "a/#", "--filter", "{", "--node", url(node))
        assert code == 2 and "--filter" in err, err
        async with aiohttp.ClientSession() as http:
            tail = f"{url(node)}/api/tail?pattern=%23"
            sockets = [await http.ws_connect(tail) for _ in range(MAX_TAIL_CLIENTS)]
            try:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(tail)
                assert refused.value.status == 503
                code, _out, err = await mesh("tail", "#", "--node", url(node))
                assert code == 1 and "limit of 16 clients" in err, err
            finally:
                for ws in sockets:
                    await ws.close()
            await _tailing(node, 0)


async def test_a_node_that_cannot_be_reached_exits_1(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for argv in (
        ("status",),
        ("routes",),
        ("peers",),
        ("publish", "in/x", "--data", "1"),
        ("tail", "in/#"),
    ):
        code, out, err = await mesh(*argv, "--node", nowhere)
        assert code == 1 and "cannot reach" in err and nowhere in err, (argv, out, err)
        assert "Traceback" not in err


async def test_a_node_that_refuses_exits_1(tmp_path: Path) -> None:
    cfg = node_config(tmp_path, "solo", api={"tokens": _tokens()})
    async with Node(cfg).serve() as node:
        for argv in (
            ("status",),
            ("routes",),
            ("peers",),
            ("publish", "in/x", "--data", "1"),
            ("tail", "in/#"),
        ):
            code, _out, err = await mesh(*argv, "--node", url(node))
            assert code == 1 and "401" in err and "--token" in err, (argv, err)
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        code, _out, err = await mesh("status", "--token", READ, "--node", url(node))
        assert code == 0, err
        # publish is an admin action: a read token is not enough.
        code, _out, err = await mesh("publish", "in/x", "--token", READ, "--node", url(node))
        assert code == 1 and "403" in err and "'admin'" in err, err
        assert READ not in err
        proc = await start("tail", "in/#", "--count", "1", "--token", READ, "--node", url(node))
        try:
            await _tailing(node)
            code, out_s, err = await mesh(
                "publish", "in/x", "--token", ADMIN, "--node", url(node), "--id", "by-admin"
            )
            assert (code, out_s.strip()) == (0, "by-admin"), err
            out, err_b = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 0, err_b
        assert "by-admin" in out.decode()


def _tokens() -> list[dict[str, Any]]:
    return [{"token": READ, "scopes": ["read"]}, {"token": ADMIN, "scopes": ["read", "admin"]}]


async def test_a_stopping_node_ends_its_tails_at_once(tmp_path: Path) -> None:
    async with Node(node_config(tmp_path, "solo")).serve() as node:
        proc = await start("tail", "#", "--node", url(node))
        await _tailing(node)
        loop = asyncio.get_running_loop()
        stopping = loop.time()
    try:
        assert loop.time() - stopping < 1.5  # not the server's shutdown timeout
        _out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 1 and b"the node closed the tail" in err, err
