"""A rogue peer holding a valid link token tries each forgery (issue 12, acceptance 6).

The node under test, ``hub``, runs as its own process (``mesh run``), so its
memory is its own. Honest sites run in-process: ``site-c`` dials ``site-b``,
which dials ``hub``; ``site-c`` subscribes to ``t/#`` and delivers to its
nats-server, so hub routes ``t/#`` for origin ``site-c`` via ``site-b`` with
the path ``[site-c, site-b]``. Events are posted at hub over HTTP.

The rogue is a raw client speaking the link protocol with its own ``accept``
entry and token. In order it tries: a hijacking path vector, a forged origin,
an invalid event, an oversized event, impersonating ``site-b`` through
``accept: '*'`` and with ``site-b``'s token, a 64 MiB frame before the hello,
a hello kept open with pings, and a slowloris HTTP request. Each must be
refused with a reason in hub's log and a counter; throughout, the route to
``site-c`` and ``site-b``'s session stay as they were, events keep flowing,
and hub's RSS stays under twice its idle RSS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mesh.core import frames
from mesh.core.envelope import Envelope, encode_batch_frame, encode_record
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import NatsServer, free_port
from tests.helpers import hello_answer, nats_collect, node_config, wait_for

pytestmark = pytest.mark.timeout(120)

B_TOKEN, ROGUE_TOKEN, WILD_TOKEN, C_TOKEN = "b-secret", "rogue-secret", "wild-secret", "c-secret"
MAX_EVENT = 256 * 1024


def hub_yaml(port: int, data: Path) -> str:
    return f"""
node: {{id: hub, listen: "127.0.0.1:{port}", data_dir: "{data}"}}
limits: {{hello_timeout: 1.0, http_header_timeout: 1.0, max_event_size: {MAX_EVENT}}}
brokers: {{web: {{kind: http}}}}
ingress: [{{from: web, topic: "t/#"}}]
accept:
  - {{id: site-b, token: {B_TOKEN}}}
  - {{id: rogue, token: {ROGUE_TOKEN}}}
  - {{id: "*", token: {WILD_TOKEN}}}
"""


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def hub_process(tmp_path: Path) -> AsyncIterator[Hub]:
    port = free_port()
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(hub_yaml(port, tmp_path / "hub-data"))
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
            [sys.executable, "-m", "mesh.cli", "run", str(cfg)],
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    hub = Hub(proc, port, log)
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                assert proc.poll() is None, hub.logged()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{hub.base}/healthz") as r:
                        return r.status == 200
                return False

            deadline = time.monotonic() + 20
            while not await up():
                assert time.monotonic() < deadline, hub.logged()
                await asyncio.sleep(0.1)
        yield hub
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


async def metric(http: aiohttp.ClientSession, hub: Hub, name: str, **labels: str) -> float:
    """A counter from hub's /metrics (0 when absent)."""
    async with http.get(f"{hub.base}/metrics") as r:
        text = await r.text()
    want = {k: v for k, v in labels.items()}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in want.items()):
            return float(m.group(3))
    return 0.0


async def routes_to_c(http: aiohttp.ClientSession, hub: Hub) -> list[tuple[str, list[str]]]:
    async with http.get(f"{hub.base}/api/routes") as r:
        body = await r.json()
    rows = body["routes"] if isinstance(body, dict) else body
    return sorted((row["next_hop"], row["path"]) for row in rows if row["origin"] == "site-c")


async def post(http: aiohttp.ClientSession, hub: Hub, topic: str, event_id: str) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/hub",
        "ce-type": "t",
        "content-type": "application/json",
    }
    async with http.post(f"{hub.base}/events/{topic}", data=b"{}", headers=headers) as r:
        assert r.status == 202, await r.text()


def record(event_id: str, topic: str, origin: str, *, size: int = 2, spec: str = "1.0") -> bytes:
    attrs = {"specversion": spec, "id": event_id, "source": "/rogue", "type": "t"}
    data = b"{}" if size <= 2 else b'"' + b"x" * (size - 2) + b'"'
    return encode_record(Envelope(Event(attrs, data, json_implied=True), topic, origin, 1))


class Rogue:
    """An authenticated raw peer: sends what it likes, records what it is sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks: list[int] = []
        self.batches = 0
        self.notices: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.batches += 1
            elif msg.type == aiohttp.WSMsgType.TEXT:
                obj = orjson.loads(msg.data)
                if obj["type"] == "ack":
                    self.acks.append(obj["seq"])
                elif obj["type"] == "notice":
                    self.notices.extend(obj["refused"])

    async def batch(self, seq: int, records: list[bytes]) -> None:
        await self.ws.send_bytes(encode_batch_frame(seq, records))
        await wait_for(lambda: seq in self.acks, 10, f"the ack of batch {seq}")

    async def close(self) -> None:
        self._task.cancel()
        await self.ws.close()


async def oversized_frame_before_the_hello(port: int, announced: int, send: int) -> int | None:
    """Upgrade to a WebSocket, announce a binary frame of ``announced`` bytes, send up to
    ``send`` of them; return the close code the server answers with (None: no close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(uuid.uuid4().bytes).decode()
    writer.write(
        (
            f"GET /mesh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(struct.pack(">BBQ", 0x82, 0x80 | 127, announced) + b"\0\0\0\0")
    chunk = bytes(64 * 1024)
    sent = 0
    code = None
    try:
        while sent < send:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
        async with asyncio.timeout(5):
            first = await reader.readexactly(2)
            if first[0] & 0x0F == 0x8:  # a close frame from the server (unmasked)
                payload = await reader.readexactly(first[1] & 0x7F)
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
    writer.close()
    return code


async def slowloris(port: int, every: float = 0.2) -> float:
    """Send a request head a byte at a time; return how long the server kept the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    try:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
            if reader.at_eof():
                break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return time.monotonic() - start


async def test_a_rogue_peer_with_a_valid_token_cannot_forge_the_mesh(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(hub_process(tmp_path))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        mesh_url = f"ws://127.0.0.1:{hub.port}/mesh"
        b = await stack.enter_async_context(
            Node(
                node_config(
                    tmp_path / "b",
                    "site-b",
                    peers=[{"id": "hub", "url": mesh_url, "token": B_TOKEN}],
                    accept=[{"id": "site-c", "token": C_TOKEN}],
                )
            ).serve()
        )
        await stack.enter_async_context(
            Node(
                node_config(
                    tmp_path / "c",
                    "site-c",
                    brokers={"bus": {"kind": "nats", "url": nats_server.url}},
                    peers=[
                        {"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": C_TOKEN}
                    ],
                    egress=[{"to": "bus", "topic": "t/#", "target": "rogue.{id}"}],
                )
            ).serve()
        )
        at_c = await stack.enter_async_context(nats_collect(nats_server.url, "rogue.>"))
        true_route = [("site-b", ["site-c", "site-b"])]

        async def route_ready() -> bool:
            return await routes_to_c(http, hub) == true_route

        deadline = time.monotonic() + 15
        while not await route_ready():
            assert time.monotonic() < deadline, "hub never learned site-c's route"
            await asyncio.sleep(0.1)
        for n in range(20):  # warm up the data path, then take the idle RSS
            await post(http, hub, f"t/warm/{n}", f"warm-{n}")
        await wait_for(lambda: len(at_c) == 20, 15, "the warm-up events at site-c")
        await asyncio.sleep(0.5)
        idle = hub.rss()

        # The rogue links with its own entry and token.
        ws = await http.ws_connect(mesh_url, max_msg_size=0)
        await ws.send_str(frames.hello("rogue", "", ROGUE_TOKEN))
        welcome = frames.parse_welcome((await ws.receive(timeout=5)).data, "hub")
        assert isinstance(welcome, frames.Welcome) and welcome.version >= 3, welcome
        rogue = Rogue(ws)
        stack.push_async_callback(rogue.close)

        # 1. Hijacking path vectors: not ending with the sender, through hub, and a tie.
        def interest(path: list[str]) -> dict[str, Any]:
            return {"origin": "site-c", "pattern": "t/#", "path": path}

        forged_paths = [["site-c"], ["site-c", "hub", "rogue"], ["site-c", "rogue"]]
        await ws.send_str(
            frames.dump(
                {
                    "type": "interests",
                    "full": True,
                    "add": [interest(p) for p in forged_paths],
                    "reach": [["rogue"]],
                }
            )
        )
        await wait_for(lambda: len(rogue.notices) >= 2, 10, "the refusal notice")
        assert (
            await metric(http, hub, "mesh_interests_refused_total", peer="rogue", reason="path")
            == 2
        )
        assert await routes_to_c(http, hub) == true_route, "a tie goes to the route learned first"
        await post(http, hub, "t/after-hijack", "after-hijack")
        await wait_for(lambda: "after-hijack" in at_c, 10, "delivery via site-b")
        assert rogue.batches == 0, "the rogue received events meant for site-c"

        # 2. An origin the rogue never announced behind it (site-b, on another side of
        # the mesh) is dropped; the rogue's own events go through. (Its tie interest
        # above did claim site-c behind it: what path vectors cannot stop, see
        # docs/routing.md.)
        await rogue.batch(
            1, [record("forged", "t/forged", "site-b"), record("own", "t/own", "rogue")]
        )
        await wait_for(lambda: "own" in at_c, 10, "the rogue's own event")
        assert (
            await metric(http, hub, "mesh_link_forged_events_total", peer="rogue", reason="origin")
            == 1
        )
        # 3 and 4. An invalid and an oversized event are dead-lettered; the batch goes on.
        await rogue.batch(
            2,
            [
                record("old-spec", "t/x", "rogue", spec="0.3"),
                record("huge", "t/x", "rogue", size=2 * 1024 * 1024),
                record("fine", "t/fine", "rogue"),
            ],
        )
        await wait_for(lambda: "fine" in at_c, 10, "the valid event of the batch")
        assert {"forged", "old-spec", "huge"}.isdisjoint(at_c)
        assert await metric(http, hub, "mesh_dead_letters_total", reason="malformed record") == 2

        # 5. Impersonating site-b: through '*', and with its own token while it is linked.
        wild = await hello_answer(mesh_url, "site-b", WILD_TOKEN)
        assert wild["type"] == "refused" and "wrong token" in wild["reason"], wild
        taken = await hello_answer(mesh_url, "site-b", B_TOKEN)
        assert taken["type"] == "refused" and "already linked" in taken["reason"], taken
        assert await metric(http, hub, "mesh_link_refused_total", reason="wrong") == 1
        assert await metric(http, hub, "mesh_link_refused_total", reason="already") == 1

        # 6. A 60 MiB frame (within the batch limit) before the hello is refused from its header.
        # Only its first 64 KiB are sent: a node that waited to read the frame would never
        # answer; one that refuses it from the header closes at once.
        code = await oversized_frame_before_the_hello(hub.port, 60 << 20, 64 << 10)
        assert code == 1009, code
        assert await metric(http, hub, "mesh_link_refused_total", reason="oversized") == 1
        # As many connections as may be in their hello at once, each pushing 8 MiB of
        # such a frame: a node that buffered them would hold 128 MiB.
        await asyncio.gather(
            *(oversized_frame_before_the_hello(hub.port, 60 << 20, 8 << 20) for _ in range(16))
        )
        assert hub.rss() < 2 * idle, f"hub RSS {hub.rss() >> 20} MiB, idle {idle >> 20} MiB"

        # 7. A hello kept open with pings is closed at limits.hello_timeout (1 s).
        started = time.monotonic()
        async with http.ws_connect(mesh_url) as pinger:

            async def ping() -> None:
                while not pinger.closed:
                    await pinger.ping()
                    await asyncio.sleep(0.3)

            task = asyncio.create_task(ping())
            answer = await pinger.receive(timeout=5)
            task.cancel()
        assert answer.type == aiohttp.WSMsgType.TEXT and "no hello within" in answer.data
        assert time.monotonic() - started < 3
        assert await metric(http, hub, "mesh_link_refused_total", reason="no") == 1

        # 8. A slowloris request is closed at limits.http_header_timeout (1 s).
        held = await slowloris(hub.port)
        assert held < 3, f"a slowloris request was held {held:.1f}s"
        assert await metric(http, hub, "mesh_http_refused_total", reason="header_timeout") == 1

        # Other sites untouched: the route, site-b's one session, delivery; hub in bounds.
        assert await routes_to_c(http, hub) == true_route
        assert b.metrics.get("mesh_link_sessions_total", peer="hub") == 1
        assert await metric(http, hub, "mesh_link_sessions_total", peer="site-b") == 1
        await post(http, hub, "t/last", "last")
        await wait_for(lambda: "last" in at_c, 10, "a last event via site-b")
        assert hub.rss() < 2 * idle, f"hub RSS {hub.rss() >> 20} MiB, idle {idle >> 20} MiB"
        log = hub.logged()
        for reason in (
            "contains this node",
            "must run from the origin to rogue",
            "has not announced behind it",
            "wrong token for node 'site-b'",
            "already linked: node 'site-b'",
            "oversized or malformed frame before the hello",
            "no hello within",
            "no complete request head",
        ):
            assert reason in log, f"{reason!r} not in hub's log"
        for secret in (B_TOKEN, ROGUE_TOKEN, WILD_TOKEN):
            assert secret not in log
