"""Egress failures follow on_error: dead-letter (and redrive), discard, pause (and resume).

A real webhook sink refuses the "poison" event with 400 (permanent) until it
is told to accept it; the node's HTTP ingress takes the events in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mesh.core.envelope import decode_record
from mesh.runtime.node import Node
from tests.helpers import node_config, unique, wait_for


class Sink:
    """A webhook endpoint that answers ``refuse`` to chosen subjects."""

    def __init__(self) -> None:
        self.received: list[str] = []  # subjects, in arrival order
        self.attempts: dict[str, int] = {}
        self.refuse: dict[str, int] = {}  # subject -> status to answer
        self.port = 0
        self.keys: list[str] = []  # the x-hook-key header of each request

    async def hook(self, request: web.Request) -> web.Response:
        subject = request.headers.get("ce-subject", "")
        self.keys.append(request.headers.get("x-hook-key", ""))
        self.attempts[subject] = self.attempts.get(subject, 0) + 1
        status = self.refuse.get(subject)
        if status is not None:
            return web.Response(status=status, text="no thanks")
        self.received.append(subject)
        return web.Response(status=204)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    app = web.Application()
    app.router.add_post("/hook", s.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    s.port = runner.addresses[0][1]
    yield s
    await runner.cleanup()


def node_with(tmp_path: Path, sink: Sink, tag: str, on_error: dict[str, Any]) -> Node:
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"web": {"kind": "http"}},
        ingress=[{"from": "web", "topic": f"{tag}/#"}],
        egress=[
            {
                "to": "web",
                "topic": f"{tag}/#",
                "target": f"http://127.0.0.1:{sink.port}/hook",
                "on_error": on_error,
            }
        ],
    )
    return Node(cfg)


async def send(node: Node, tag: str, subjects: list[str], data: bytes = b"hi") -> None:
    async with aiohttp.ClientSession() as http:
        for subject in subjects:
            headers = {
                "ce-specversion": "1.0",
                "ce-id": f"{tag}-{subject}",
                "ce-source": "/t",
                "ce-type": "t",
                "ce-subject": subject,
                "content-type": "text/plain",
            }
            r = await http.post(
                f"http://127.0.0.1:{node.port}/events/{tag}/x", data=data, headers=headers
            )
            assert r.status == 202


def cli(node: Node, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mesh.cli", *args, "--url", f"http://127.0.0.1:{node.port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def test_poison_event_is_dead_lettered_with_its_reason_and_redriven(
    tmp_path: Path, sink: Sink
) -> None:
    tag = unique()
    sink.refuse = {"poison": 400, "flaky": 503}
    policy = {
        "retry": {"max_attempts": 3, "backoff": {"initial": 0.01, "max": 0.05}},
        "then": "dead-letter",
    }
    async with node_with(tmp_path, sink, tag, policy).serve() as node:
        await node.ready()
        await send(node, tag, ["good1", "poison", "flaky", "good2"])
        await wait_for(
            lambda: node.metrics.get("mesh_dead_letters_total", reason="egress failed") == 2,
            what="two dead letters",
        )
        await wait_for(lambda: sink.received == ["good1", "good2"], what="the good events")
        assert sink.attempts["poison"] == 1  # 400 is permanent: no retry
        assert sink.attempts["flaky"] == 3  # 503 is transient: retried, then dead-lettered

        code, out = await asyncio.to_thread(cli, node, "dlq", "list", "--json")
        assert code == 0
        entries = {e["event"]["id"]: e for e in json.loads(out)["entries"]}
        assert set(entries) == {f"{tag}-poison", f"{tag}-flaky"}
        assert "answered 400" in entries[f"{tag}-poison"]["reason"]
        assert "answered 503" in entries[f"{tag}-flaky"]["reason"]
        assert entries[f"{tag}-poison"]["place"].startswith("egress:web:")
        code, out = await asyncio.to_thread(
            cli, node, "dlq", "show", str(entries[f"{tag}-poison"]["id"])
        )
        assert code == 0 and json.loads(out)["event"]["attributes"]["subject"] == "poison"
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{node.port}/api/dlq?limit=many"
            async with http.get(url) as resp:
                assert resp.status == 400
                assert "must be integers" in (await resp.json())["detail"]

        sink.refuse = {}
        code, out = await asyncio.to_thread(cli, node, "dlq", "redrive", "--all")
        assert code == 0 and "redriven: 2" in out
        await wait_for(
            lambda: sorted(sink.received) == ["flaky", "good1", "good2", "poison"],
            what="the redriven events",
        )
        assert await node.store.dlq_count() == 0
        await asyncio.sleep(0.2)
        assert len(sink.received) == 4  # delivered once each


async def test_discard_drops_and_counts(tmp_path: Path, sink: Sink) -> None:
    tag = unique()
    sink.refuse = {"poison": 400}
    async with node_with(tmp_path, sink, tag, {"then": "discard"}).serve() as node:
        await node.ready()
        await send(node, tag, ["good1", "poison", "good2"])
        await wait_for(lambda: sink.received == ["good1", "good2"], what="the good events")
        await wait_for(
            lambda: node.metrics.total("mesh_discarded_total") == 1, what="the discard count"
        )
        assert await node.store.dlq_count() == 0


async def test_pause_holds_the_queue_in_order_until_resumed(tmp_path: Path, sink: Sink) -> None:
    tag = unique()
    sink.refuse = {"poison": 400}
    async with node_with(tmp_path, sink, tag, {"then": "pause"}).serve() as node:
        await node.ready()
        await send(node, tag, ["good1", "poison", "good2"])
        worker = node.egress_workers()[0]
        await wait_for(lambda: worker.paused is not None, what="the pause")
        await asyncio.sleep(0.3)
        assert sink.received == ["good1"]  # good2 waits behind the poison event
        code, out = await asyncio.to_thread(cli, node, "egress")
        assert code == 0 and "answered 400" in out
        assert worker.outbox.depth == 2

        sink.refuse = {}
        code, out = await asyncio.to_thread(cli, node, "egress", "resume", "0")
        assert code == 0 and "resumed" in out
        await wait_for(
            lambda: sink.received == ["good1", "poison", "good2"],
            what="delivery in order after resume",
        )
        assert await node.store.dlq_count() == 0


async def test_the_dead_letter_queue_keeps_its_bound_and_counts_what_it_evicts(
    tmp_path: Path, sink: Sink
) -> None:
    tag = unique()
    subjects = [f"p{i}" for i in range(8)]
    sink.refuse = dict.fromkeys(subjects, 400)
    cfg = node_with(tmp_path, sink, tag, {"then": "dead-letter"}).config
    # A dead letter here is 2,000 bytes of data and a few hundred of the rest:
    # three fit in 7,000 bytes, four do not.
    cfg = cfg.model_copy(update={"dlq": cfg.dlq.model_copy(update={"max_bytes": 7_000})})
    node = Node(cfg)
    node.maintenance_every = 0.1
    async with node.serve(), aiohttp.ClientSession() as http:
        await node.ready()
        for subject in subjects:
            await send(node, tag, [subject], b"x" * 2000)
            await wait_for(lambda s=subject: sink.attempts.get(s), what=f"{subject} tried")
        await wait_for(
            lambda: node.metrics.get("mesh_dead_letters_evicted_total", reason="max_bytes") == 5,
            what="five evictions",
        )
        kept = [
            decode_record(e.record).event.attrs["subject"] for e in await node.store.dead_letters()
        ]
        assert kept == subjects[-3:], "the oldest go first"
        await asyncio.sleep(0.3)
        assert node.metrics.get("mesh_dead_letters_evicted_total", reason="max_bytes") == 5
        async with http.get(f"http://127.0.0.1:{node.port}/metrics") as r:
            assert 'mesh_dead_letters_evicted_total{reason="max_bytes"} 5' in await r.text()


async def test_webhook_credentials_are_shown_nowhere(
    tmp_path: Path, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-secret-9"
    tag = unique()
    sink.refuse = {"poison": 400}
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"web": {"kind": "http", "headers": {"x-hook-key": f"key-{secret}"}}},
        ingress=[{"from": "web", "topic": f"{tag}/#"}],
        egress=[
            {
                "to": "web",
                "topic": f"{tag}/#",
                "target": f"http://hookuser:{secret}@127.0.0.1:{sink.port}/hook",
            }
        ],
    )
    async with Node(cfg).serve() as node, aiohttp.ClientSession() as http:
        await node.ready()
        await send(node, tag, ["poison"])
        await wait_for(
            lambda: node.metrics.get("mesh_dead_letters_total", reason="egress failed") == 1,
            what="the dead letter",
        )
        shown = []
        for path in ("/api/egress", "/api/dlq", "/api/stats", "/metrics"):
            async with http.get(f"http://127.0.0.1:{node.port}{path}") as r:
                shown.append(await r.text())
        [entry] = await node.store.dead_letters()
        assert "answered 400" in entry.reason and "hookuser:***@" in entry.reason
        shown.append(entry.reason)
    shown += [r.getMessage() for r in caplog.records]
    assert not [s for s in shown if secret in s]
    assert "hookuser:***@" in shown[0]
    assert sink.keys == [f"key-{secret}"], "the configured webhook header is sent"
