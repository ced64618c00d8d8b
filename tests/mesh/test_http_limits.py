"""HTTP connection limits on a real node: pending connections bounded, slow bodies refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from mesh.runtime.node import Node
from tests.helpers import node_config, wait_for

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"web": {"kind": "http"}},
        ingress=[{"from": "web", "topic": "t/#"}],
        limits={
            "http_header_timeout": 5.0,
            "http_body_timeout": 0.5,
            "max_pending_connections": 4,
        },
    )
    async with Node(cfg).serve() as n:
        await n.ready()
        yield n


async def test_connections_waiting_for_a_request_head_are_bounded(tmp_path: Path) -> None:
    async with node(tmp_path) as n:
        idle = [await asyncio.open_connection("127.0.0.1", n.port) for _ in range(4)]
        await wait_for(lambda: n.guard.pending == 4, 5, "four pending connections")
        reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
        async with asyncio.timeout(2):
            assert await reader.read() == b"", "the fifth is closed at once, unanswered"
        writer.close()
        assert n.metrics.get("mesh_http_refused_total", reason="busy") == 1
        for _r, w in idle:
            w.close()
        await wait_for(lambda: n.guard.pending == 0, 5, "the idle ones gone")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{n.port}/healthz") as r,
        ):
            assert r.status == 200


async def test_a_body_slower_than_the_limit_gets_408(tmp_path: Path) -> None:
    async with node(tmp_path) as n:
        reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
        writer.write(
            b"POST /events/t/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"ce-specversion: 1.0\r\nce-id: 1\r\nce-source: /s\r\nce-type: t\r\n"
            b'Content-Length: 100\r\n\r\n{"a": '
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        problem = orjson.loads(body)
        assert "limits.http_body_timeout" in problem["detail"], problem
        assert n.metrics.get("mesh_http_refused_total", reason="body_timeout") == 1


async def test_an_unparsable_request_is_counted_and_logged_in_one_line_without_its_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with node(tmp_path) as n:
        reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
        writer.write(
            b"POST /events/t/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer sec\x01ret-token\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(4096)
        writer.close()
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
        assert n.metrics.get("mesh_http_refused_total", reason="malformed") == 1
        lines = [r for r in caplog.records if "unparsable request" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None, "one line, no traceback"
        assert not [r for r in caplog.records if "Error handling request" in r.getMessage()]
        assert "ret-token" not in caplog.text
