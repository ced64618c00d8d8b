"""Property-based fuzzing of what a node takes from outside (issue 12, acceptance 7).

One real node serves the whole module, on its own event loop in a thread;
hypothesis drives it with generated input:

- hello frames (text and binary, JSON-like objects with mutated fields): the
  answer is a ``refused`` frame with a reason (or a welcome for a valid hello),
  never silence, never a crash;
- control messages from an authenticated peer (ack, credit, interests, notice,
  with fields of the wrong type, missing, huge, nested junk): either the link
  keeps working (a probe batch is acknowledged) or it is closed with code 4002
  and a reason;
- ``POST /events/<topic>`` bodies, content types and ``ce-*`` headers, bodies
  not UTF-8 included: 202, or a 4xx problem+json that says what was wrong;
  never a 5xx, never a hang.

After each example the node still answers ``/healthz`` and none of its
supervised tasks has ended. Runs are derandomized, so CI replays the same
examples.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.core import frames
from mesh.core.envelope import encode_batch_frame
from mesh.runtime.link import CLOSE_PROTOCOL, CLOSE_REFUSED
from mesh.runtime.node import Node
from tests.helpers import node_config

pytestmark = pytest.mark.timeout(240)
T = TypeVar("T")
TOKEN = "fuzz-token"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Served:
    """A node on its own loop in a thread; tests hand it coroutines to run there."""

    def __init__(self, tmp: Path) -> None:
        self.cfg = node_config(
            tmp,
            "fuzzed",
            brokers={"web": {"kind": "http"}},
            ingress=[{"from": "web", "topic": "f/#"}],
            accept=[{"id": "*", "token": TOKEN}],
        )
        self.loop = asyncio.new_event_loop()
        self.node: Node | None = None
        self.http: aiohttp.ClientSession | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._ids = itertools.count()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Node(self.cfg).serve() as node, aiohttp.ClientSession() as http:
            await node.ready()
            self.node, self.http = node, http
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(20), "the node did not start"

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        assert self.node is not None
        return f"http://127.0.0.1:{self.node.port}"

    def fresh_id(self) -> str:
        return f"fuzz-{next(self._ids)}"

    def healthy(self) -> None:
        async def check() -> None:
            assert self.http is not None and self.node is not None
            async with self.http.get(f"{self.url}/healthz") as r:
                assert r.status == 200
            failed = [t.get_name() for t in self.node._scope.tasks if t.done()]  # type: ignore[union-attr]
            assert not failed, f"supervised tasks ended: {failed}"

        self.run(check())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("fuzzed"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


# -- strategies -------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
node_ids = st.sampled_from(["fuzz-x", "", "UPPER", "-x", "a" * 64, "fuzzed"]) | st.text(max_size=12)


@st.composite
def hellos(draw: st.DrawFn) -> str | bytes:
    base: dict[str, Any] = {
        "type": "hello",
        "node": "fuzz-x",
        "region": "r",
        "version": 1,
        "versions": [1, 3],
        "token": TOKEN,
    }
    kind = draw(st.sampled_from(["mutated", "json", "text", "bytes"]))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    for key in draw(st.lists(st.sampled_from(sorted(base)), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            base.pop(key)
        else:
            base[key] = draw(node_ids if key == "node" else json_values)
    if base.get("token") == TOKEN and base.get("node") == "fuzz-x":
        base["token"] = "not-the-token"  # every hello here is refused
    return json.dumps(base)


control_types = st.sampled_from(["ack", "credit", "interests", "notice", "hello", "x", ""])


@st.composite
def controls(draw: st.DrawFn) -> str:
    obj: dict[str, Any] = {"type": draw(control_types | json_values)}
    fields = ["seq", "credit", "events", "full", "add", "remove", "refused", "reach"]
    for key in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
        obj[key] = draw(
            json_values
            | st.integers(min_value=-(2**70), max_value=2**70)
            | st.lists(
                st.fixed_dictionaries(
                    {"origin": node_ids, "pattern": st.text(max_size=20), "path": json_values}
                ),
                max_size=3,
            )
        )
    return json.dumps(obj)  # the stdlib's: integers of any size


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
)  # what an HTTP client can send as a header value


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    topic = draw(st.sampled_from(["f/x", "f/a/b", "nope/x", "f/" + "x" * 300]))
    headers = {
        name: draw(header_text)
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "ce-specversion",
                        "ce-id",
                        "ce-source",
                        "ce-type",
                        "ce-time",
                        "ce-subject",
                        "ce-dataschema",
                        "ce-x",
                        "content-type",
                        "ce-" + "a" * 30,
                    ]
                ),
                max_size=6,
                unique=True,
            )
        )
    }
    if draw(st.booleans()):
        headers.update({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"})
    if draw(st.booleans()):
        headers["content-type"] = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/cloudevents+json",
                    "text/plain",
                    "application/cloudevents-batch+json",
                    "application/octet-stream",
                ]
            )
        )
    body = draw(
        st.binary(max_size=300)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.just(b"\xff\xfe\x00not utf-8")
    )
    return topic, body, headers


# -- properties -------------------------------------------------------------------------


@FUZZ
@given(frame=hellos())
def test_any_hello_is_answered_with_a_reason(served: Served, frame: str | bytes) -> None:
    async def go() -> None:
        assert served.http is not None
        async with served.http.ws_connect(f"{served.url}/mesh") as ws:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            answer = orjson.loads(msg.data)
            assert answer["type"] == "refused" and answer["reason"], answer
            closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == CLOSE_REFUSED

    served.run(go())
    served.healthy()


@FUZZ
@given(frame=controls())
def test_any_control_message_keeps_the_link_or_closes_it_with_a_reason(
    served: Served, frame: str
) -> None:
    peer = served.fresh_id()

    async def go() -> None:
        assert served.http is not None
        async with served.http.ws_connect(f"{served.url}/mesh", max_msg_size=0) as ws:
            await ws.send_str(frames.hello(peer, "r", TOKEN))
            welcome = frames.parse_welcome((await ws.receive(timeout=10)).data, "fuzzed")
            assert isinstance(welcome, frames.Welcome), welcome
            await ws.send_str(frame)
            await ws.send_bytes(encode_batch_frame(1 << 40, []))  # a probe: acked if alive
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        obj = orjson.loads(msg.data)
                        if obj.get("type") == "ack" and obj.get("seq") == 1 << 40:
                            return  # tolerated, the link works
                        continue
                    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                    assert ws.close_code == CLOSE_PROTOCOL, (ws.close_code, frame)
                    assert msg.extra, "closed without a reason"
                    return

    served.run(go())
    served.healthy()


@FUZZ
@given(req=requests())
def test_any_events_request_gets_202_or_a_4xx_problem(
    served: Served, req: tuple[str, bytes, dict[str, str]]
) -> None:
    topic, body, headers = req

    async def go() -> None:
        assert served.http is not None
        async with served.http.post(
            f"{served.url}/events/{topic}", data=body, headers=headers
        ) as r:
            text = await r.read()
            assert r.status < 500, (r.status, text[:300], headers, body[:100])
            if r.status >= 400:
                assert r.content_type == "application/problem+json", (r.status, text[:200])
                assert orjson.loads(text)["detail"], text[:200]
            else:
                assert r.status == 202, (r.status, text[:200])

    served.run(go())
    served.healthy()
