"""Malformed frames at a real node's ``/mesh`` endpoint, while a legitimate peer streams.

Node ``a`` streams 3,000 events over a real peer link to node ``b`` (the node
under test), which delivers them to its nats-server. Meanwhile a fuzz client
throws malformed frames at ``b``'s ``/mesh``:

- before a hello, on a fresh connection each: random bytes (binary and text),
  truncated batch frames, control messages with wrong types, a welcome that is
  a list, JSON that is not an object, near-miss hellos. Each must be refused
  (``refused`` frame, close code 4001) and counted in ``mesh_link_refused_total``;
- after a valid hello, as an authenticated peer that then misbehaves: the same
  kinds of junk, plus well-framed batches carrying malformed event records and
  control frames whose fields have wrong types, are missing, are huge numbers
  or nested junk. Each frame is followed by a probe (an empty batch, which the
  node acknowledges), so the client knows whether the node tolerated the frame
  or closed the link; it then reconnects. A closed link must have been closed
  with code 4002 and counted in ``mesh_link_protocol_errors_total``; every
  malformed record must be dead-lettered and counted, never routed.

Then: ``b`` still answers ``/api/health``, its supervised tasks all still run,
the legitimate link never dropped, every one of the 3,000 events arrived
exactly once, and the process's memory stayed bounded.

The inputs come from ``random.Random(SEED)``; set ``MESH_FUZZ_SEED`` to
replay another run. Every assertion message carries the seed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import string
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mesh.config import Limits
from mesh.core import frames
from mesh.core.envelope import Envelope, encode_batch_frame, encode_record
from mesh.core.event import Event
from mesh.runtime.link import CLOSE_PROTOCOL, CLOSE_REFUSED
from mesh.runtime.node import Node
from tests.helpers import wait_for
from tests.mesh.meshnet import TOKEN, MeshNet, mesh_net

SEED = int(os.environ.get("MESH_FUZZ_SEED", "20250611"))
EVENTS = 3000  # the legitimate stream, a -> b -> NATS
PRE_HELLO = 500  # connections, one malformed frame each
POST_HELLO = 700  # malformed frames from an authenticated peer
BIG = 1 << 20  # bytes of each large frame
BIG_FRAMES = 160  # large frames, spread over both phases (160 MiB in all)
# Memory. The fuzzer pushes BIG_FRAMES x 1 MiB through the node: about 65 MiB
# of them in batches the node accepts (queues, routes and acknowledges), the
# rest in frames it refuses, plus ~1,200 small frames and ~900 connections.
# The bound is the RSS of the whole test process (both nodes, their clients,
# the fuzzer), measured after a warm-up so first-use allocations are not
# counted; it grows by about 12 MiB. A node that kept what it was sent (an
# unbounded batch queue, sessions or handler tasks that never end, frames held
# by exceptions it keeps) grows by more than the bound: keeping only the
# accepted batch frames, in a list, made this fail at +69 MiB.
RSS_BOUND = 40 << 20
FUZZ_PEER = "fuzz-peer"
HELLO_SIZE = Limits().max_hello_size
MESSAGE_TOO_BIG = 1009
PROBE_SEQ = 1 << 40  # sequence numbers of probes; random frames stay below 2**32

pytestmark = pytest.mark.timeout(120)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- what the fuzzer sends --------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    kind: str  # a label, for the summary
    data: bytes | str  # bytes: a binary frame; str: a text frame
    junk_records: int = 0  # malformed records inside a well-framed batch


def _junk_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, 2**64, 10**30, -(10**30)])
    if pick == 3:
        return rng.choice([0.5, -1e308, 1e-300, float("inf"), float("nan")])
    if pick == 4:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(20)))
    if pick == 5:
        return "\u0000\u202e\U0001f4a9" * rng.randrange(1, 4)
    if pick == 6:
        return ""
    if pick == 7:
        return "x" * rng.choice([300, 5000])
    if pick in (8, 9):
        return [_junk_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["origin", "pattern", "path", "type", "a", ""]): _junk_value(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def _dumps(obj: Any) -> str:
    # The standard library writes what orjson refuses (ints beyond 64 bits, NaN).
    return json.dumps(obj, allow_nan=True)


_TYPES = ["hello", "welcome", "refused", "ack", "credit", "interests", "notice"]
_FIELDS = {
    "hello": ["node", "region", "version", "versions", "token"],
    "welcome": ["node", "region", "version"],
    "refused": ["reason"],
    "ack": ["seq", "credit"],
    "credit": ["events"],
    "interests": ["full", "add", "remove"],
    "notice": ["refused"],
}


def _interest(rng: random.Random) -> Any:
    item: dict[str, Any] = {
        "origin": FUZZ_PEER,
        "pattern": f"fuzz/{rng.randrange(5)}/#",
        "path": [FUZZ_PEER],
    }
    for key in rng.sample(["origin", "pattern", "path", "filter", "up"], rng.randrange(1, 3)):
        if rng.random() < 0.3:
            item.pop(key, None)
        else:
            item[key] = _junk_value(rng)
    return item if rng.random() < 0.9 else _junk_value(rng)


def bad_control(rng: random.Random) -> str:
    kind = rng.choice([*_TYPES, "", "ACK", "x" * 100])
    obj: dict[str, Any] = {"type": kind}
    fields = _FIELDS.get(kind, ["seq", "events"])
    for name in fields:
        r = rng.random()
        if r < 0.25:
            continue  # missing
        obj[name] = _junk_value(rng)
    if kind == "interests" and rng.random() < 0.5:
        obj["full"] = rng.random() < 0.5
        obj["add"] = [_interest(rng) for _ in range(rng.randrange(1, 6))]
        obj["remove"] = [_junk_value(rng) for _ in range(rng.randrange(3))]
    if kind in ("ack", "credit") and rng.random() < 0.5:
        # Huge or negative numbers, where an integer is expected.
        obj[fields[0]] = rng.choice([-1, 2**62 + 1, 2**64, 10**40, 1.0, "1", [1], True])
    if rng.random() < 0.2:
        obj["type"] = _junk_value(rng)  # the type itself of a wrong type
    return _dumps(obj)


def not_an_object(rng: random.Random) -> str:
    return rng.choice(
        [
            "[]",
            "[{}]",
            "null",
            "true",
            "1",
            "-0.0",
            '"hello"',
            '[{"type": "ack", "seq": 1}]',
            "1" * 500,
            "NaN",
            "[" * 5000 + "]" * 5000,  # deeper than any JSON parser's limit
            '{"type": "ack", "seq": ' + "[" * 3000 + "]" * 3000 + "}",
            '{"type": "ack"',  # truncated
            "{'type': 'ack'}",
            '{"type": "hello", "node": "\\ud800"}',  # a lone surrogate
            "",
            " ",
        ]
    )


def random_text(rng: random.Random) -> str:
    n = rng.choice([1, 10, 200, 3000])
    alphabet = string.printable + '{}[]":,\u00e9\u4e2d\U0001f600\ufffd'
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_bytes(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 8, 12, 13, 14, 40, 500, 4096])
    data = bytearray(rng.randbytes(n))
    if n >= 13 and rng.random() < 0.5:
        data[0:1] = b"B"  # looks like a batch frame
    return bytes(data)


def _event(rng: random.Random, n: int) -> Envelope:
    ev = Event(
        {"specversion": "1.0", "id": f"fuzz-{n}", "source": "/fuzz", "type": "t"},
        b'{"n": %d}' % n,
        json_implied=True,
    )
    return Envelope(ev, f"fuzz/{rng.randrange(5)}/x", FUZZ_PEER, 1, frozenset({"b"}))


def truncated_batch(rng: random.Random, n: int) -> bytes:
    records = [encode_record(_event(rng, n * 10 + i)) for i in range(rng.randrange(1, 5))]
    frame = encode_batch_frame(rng.randrange(1, 1 << 32), records)
    return frame[: rng.randrange(len(frame))]


_ATTRS = {"specversion": "1.0", "id": "x", "source": "/f", "type": "t"}
_HEADER = ["in/fuzz", FUZZ_PEER, 1, ["b"], _ATTRS, 1]  # topic, origin, hops, dests, attrs, flags
_BAD_FIELD: list[list[Any]] = [
    [1, None, [], {}],  # topic
    [1, None, [], "", "NOT A NODE"],  # origin
    ["1", None, -1, 1.5, [], 2**64],  # hops
    [5, "b", [[1]], {"b": 1}, [1], [None]],  # dests
    [[], "s", {}, {"id": "x"}, {"specversion": "1.0", "id": {}, "source": "/f", "type": "t"}, 1],
    ["x", None, [], 1.5, 2**64],  # flags
]


def junk_record(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return rng.randbytes(rng.randrange(0, 12))  # shorter than its own length prefix
    if r < 0.2:
        header = rng.randbytes(rng.randrange(1, 30))  # not JSON
    elif r < 0.3:
        # Six fields, or seven with the ingress time (link protocol 4): not five, not
        # eight, and not an ingress time that is no time.
        wrong = [{}, "x", 1, [], _HEADER[:5], [*_HEADER, 0, 0], [*_HEADER, "x"], [*_HEADER, -1]]
        header = _dumps(rng.choice(wrong)).encode()
    else:
        fields: list[Any] = json.loads(json.dumps(_HEADER))
        i = rng.randrange(len(fields))
        fields[i] = rng.choice(_BAD_FIELD[i])
        header = _dumps(fields).encode()
    length = len(header) if rng.random() < 0.8 else rng.choice([len(header) + 100, 2**32 - 1])
    return struct.pack(">I", length) + header + b"{}"


def junk_batch(rng: random.Random, n: int) -> Frame:
    """A well-framed batch whose records include malformed ones: dead letters, not a close."""
    junk = [junk_record(rng) for _ in range(rng.randrange(1, 4))]
    good = [encode_record(_event(rng, n * 10 + i)) for i in range(rng.randrange(0, 2))]
    records = junk + good
    rng.shuffle(records)
    return Frame("junk records", encode_batch_frame(rng.randrange(1, 1 << 32), records), len(junk))


def big_frame(rng: random.Random, n: int, authenticated: bool) -> Frame:
    pick = rng.randrange(5)
    if authenticated and pick < 3:
        # A batch of no events with a megabyte of trailing bytes: within credit,
        # but an empty batch is a bare header, so the node closes the link.
        return Frame("big empty batch", encode_batch_frame(n, []) + bytes(BIG))
    if pick % 2:
        return Frame("big bytes", rng.randbytes(BIG))
    return Frame("big text", '{"type": "interests", "add": "' + "a" * BIG + '"}')


def malformed(rng: random.Random, n: int, *, authenticated: bool) -> Frame:
    r = rng.random()
    if r < 0.15:
        return Frame("random bytes", random_bytes(rng))
    if r < 0.27:
        return Frame("random text", random_text(rng))
    if r < 0.40:
        return Frame("truncated batch", truncated_batch(rng, n))
    if r < 0.70:
        return Frame("bad control", bad_control(rng))
    if r < 0.80:
        return Frame("not an object", not_an_object(rng))
    if r < 0.85:
        return Frame("list welcome", "[]")
    if authenticated:
        return junk_batch(rng, n)
    # Near-miss hellos: right shape, one thing wrong.
    hello: dict[str, Any] = json.loads(frames.hello(FUZZ_PEER, "r", TOKEN))
    key = rng.choice(list(_NEAR_MISS))
    hello[key] = rng.choice(_NEAR_MISS[key])
    if key == "versions":
        hello.pop("version")
    return Frame("near-miss hello", _dumps(hello))


_NEWER = [frames.LINK_VERSIONS[1] + 1, frames.LINK_VERSIONS[1] + 7]  # none we speak
_NEAR_MISS: dict[str, list[Any]] = {
    "node": [None, 1, "", "UPPER", "-x", "a" * 64, ["fuzz-peer"], "b", "fuzz peer"],
    "token": [None, 1, "", TOKEN + " ", TOKEN.upper(), [TOKEN], {"token": TOKEN}],
    "versions": [None, [], [2, 1], [0, 1], [1], [1, 2, 3], ["1", "2"], _NEWER, [-1, 2**64]],
}


# -- the fuzz client --------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    refused: int = 0  # pre-hello connections refused
    closed: Counter[int] = field(default_factory=Counter)  # post-hello closes, by code
    tolerated: Counter[str] = field(default_factory=Counter)  # post-hello frames survived
    junk_records: int = 0  # malformed records in batches the node accepted
    sessions: int = 0

    @property
    def frames(self) -> int:
        return sum(self.sent.values())


async def _send(ws: aiohttp.ClientWebSocketResponse, frame: Frame) -> None:
    if isinstance(frame.data, bytes):
        await ws.send_bytes(frame.data)
    else:
        await ws.send_str(frame.data)


async def _until_closed(ws: aiohttp.ClientWebSocketResponse, seed: int) -> int:
    """Read until the node closes; return the close code."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code or 0
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise AssertionError(f"seed {seed}: websocket error {ws.exception()}")


class Fuzzer:
    def __init__(self, url: str, rng: random.Random, seed: int) -> None:
        self.url = url
        self.rng = rng
        self.seed = seed
        self.tally = Tally()
        self.http = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._probe = PROBE_SEQ

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        await self.http.close()

    async def unauthenticated(self, frame: Frame) -> None:
        async with self.http.ws_connect(self.url, max_msg_size=0) as ws:
            await _send(ws, frame)
            code = await _until_closed(ws, self.seed)
        self.tally.sent[frame.kind] += 1
        # A frame beyond limits.max_hello_size is refused from its header, before it
        # is read: the WebSocket layer closes with 1009 (message too big).
        expected = MESSAGE_TOO_BIG if len(frame.data) > HELLO_SIZE else CLOSE_REFUSED
        assert code == expected, (
            f"seed {self.seed}: a {frame.kind} frame before the hello closed with {code}, "
            f"not {expected}: {frame.data[:200]!r}"
        )
        self.tally.refused += 1

    async def _session(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None or self._ws.closed:
            ws = await self.http.ws_connect(self.url, max_msg_size=0)
            await ws.send_str(frames.hello(FUZZ_PEER, "fuzz", TOKEN))
            msg = await ws.receive(timeout=10)
            welcome = frames.parse_welcome(msg.data, "b")
            assert isinstance(welcome, frames.Welcome), f"seed {self.seed}: {welcome}"
            self._ws = ws
            self.tally.sessions += 1
        return self._ws

    async def authenticated(self, frame: Frame) -> None:
        """Send ``frame`` then a probe; learn whether the node kept the link."""
        ws = await self._session()
        self._probe += 1
        probe = self._probe
        await _send(ws, frame)
        await ws.send_bytes(encode_batch_frame(probe, []))
        self.tally.sent[frame.kind] += 1
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    obj = json.loads(msg.data)
                    if obj.get("type") == "ack" and obj.get("seq") == probe:
                        self.tally.tolerated[frame.kind] += 1
                        self.tally.junk_records += frame.junk_records
                        return
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    self.tally.closed[ws.close_code or 0] += 1
                    assert frame.junk_records == 0, (
                        f"seed {self.seed}: a well-framed batch with malformed records "
                        f"closed the link ({ws.close_code}) instead of dead-lettering "
                        f"them: {frame.data[:300]!r}"
                    )
                    await ws.close()
                    return
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise AssertionError(f"seed {self.seed}: websocket error {ws.exception()}")
                # Binary frames (events for our interests) are ignored, never acknowledged.


# -- the test ---------------------------------------------------------------------------


class LogTally(logging.Handler):
    """Counts the records of ``mesh`` and ``aiohttp`` and keeps only short summaries.

    pytest's log capture keeps every record, and a record of a fault keeps its
    exception, whose traceback keeps the frame that broke the link: a megabyte
    frame per record would count against the node's memory bound. Records stop
    here instead (``propagate`` off while the test runs); what escaped as an
    unexpected exception (a record with a traceback, or an error logged by
    aiohttp's server) is kept as one line each, and the test fails on it.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.levels: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        if record.exc_info or (record.name.startswith("aiohttp") and record.levelno >= 40):
            exc = record.exc_info[1] if record.exc_info else None
            self.unexpected.append(f"{record.name}: {record.getMessage()[:200]} ({exc!r:.200})")
        record.exc_info = record.args = None


@pytest.fixture
def logs() -> Iterator[LogTally]:
    tally = LogTally()
    loggers = [logging.getLogger("mesh"), logging.getLogger("aiohttp")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(tally)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        yield tally
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(tally)
            lg.propagate = propagate
            lg.setLevel(level)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[MeshNet]:
    async with mesh_net(tmp_path, ["a", "b"], [("a", "b")], {"b": ["in/#"]}) as net:
        await net.wait_converged()
        yield net


async def _healthy(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/api/health"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status == 200 and (await r.json())["status"] == "ok"


def _tasks(node: Node) -> dict[str, bool]:
    scope = node._scope
    assert scope is not None
    return {t.get_name(): t.done() for t in scope.tasks}


class Stream:
    """The legitimate stream: 3,000 events published at a, spread over the fuzzing."""

    def __init__(self, net: MeshNet) -> None:
        self.net = net
        self.published = 0

    async def run(self) -> None:
        while self.published < EVENTS:
            chunk = min(50, EVENTS - self.published)
            for i in range(self.published, self.published + chunk):
                await self.net.publish("a", "in.legit", f"legit-{i:05d}")
            await self.net.flush()
            self.published += chunk
            await asyncio.sleep(0.02)


async def test_malformed_frames_are_refused_while_a_legitimate_stream_flows(
    net: MeshNet, logs: LogTally
) -> None:
    seed = SEED
    rng = random.Random(seed)
    b = net.node("b")
    url = f"ws://127.0.0.1:{b.port}/mesh"
    tasks_before = _tasks(b)
    assert not any(tasks_before.values())
    legit = b.sessions["a"]
    fuzzer = Fuzzer(url, rng, seed)
    phases = [False] * PRE_HELLO + [True] * POST_HELLO
    rng.shuffle(phases)  # unauthenticated connections come and go beside the session
    big_at = set(rng.sample(range(len(phases)), BIG_FRAMES))
    # Built as they are sent, so the large frames are not all held at once.
    plan = (
        (auth, big_frame(rng, n, auth) if n in big_at else malformed(rng, n, authenticated=auth))
        for n, auth in enumerate(phases)
    )
    warmup = 100
    base = 0
    stream = Stream(net)
    started = time.monotonic()
    try:
        streaming = asyncio.create_task(stream.run())
        for i, (authenticated, frame) in enumerate(plan):
            if i == warmup:
                gc.collect()
                base = rss()
            if authenticated:
                await fuzzer.authenticated(frame)
            else:
                await fuzzer.unauthenticated(frame)
            if i % 100 == 0:
                assert await _healthy(b.port), f"seed {seed}: /api/health failed after {i} frames"
        fuzz_seconds = time.monotonic() - started
        during = stream.published
        await streaming
    finally:
        await fuzzer.close()
    tally = fuzzer.tally
    summary = (
        f"seed {seed}: {tally.frames} frames in {fuzz_seconds:.1f}s, sent {dict(tally.sent)}, "
        f"tolerated {dict(tally.tolerated)}, closed {dict(tally.closed)}, "
        f"{tally.sessions} sessions, {during} events published meanwhile"
    )
    print(summary)
    assert tally.frames >= 1000, summary
    assert during >= EVENTS // 2, f"the stream hardly overlapped the fuzzing: {summary}"
    assert not logs.unexpected, f"seed {seed}: exceptions escaped: {logs.unexpected[:10]}"

    # Every legitimate event arrives, exactly once.
    received = net.members["b"].received
    want = {f"legit-{i:05d}" for i in range(EVENTS)}
    await wait_for(lambda: want <= set(received), 30, f"{EVENTS} events ({summary})")
    await asyncio.sleep(0.5)  # room for a duplicate to show
    counts = Counter(r for r in received if r.startswith("legit-"))
    dup = {k: c for k, c in counts.items() if c > 1}
    assert not dup, f"seed {seed}: duplicated {len(dup)} events, e.g. {list(dup)[:5]}"
    assert set(counts) == want, f"seed {seed}: unexpected ids {set(counts) - want}"

    # The node stays up: health answers, every supervised task still runs, the
    # legitimate link never dropped.
    assert await _healthy(b.port), summary
    tasks_after = _tasks(b)
    assert set(tasks_before) <= set(tasks_after), (
        f"seed {seed}: tasks gone: {set(tasks_before) - set(tasks_after)}"
    )
    assert not any(tasks_after.values()), f"seed {seed}: tasks ended: {tasks_after}"
    assert b.sessions.get("a") is legit, f"seed {seed}: the legitimate link dropped"
    assert b.metrics.get("mesh_link_sessions_total", peer="a") == 1, summary

    # Memory stays bounded.
    gc.collect()
    growth = rss() - base
    print(f"seed {seed}: RSS {base >> 20} MiB after the warm-up, grew by {growth / 2**20:.1f} MiB")
    assert growth < RSS_BOUND, (
        f"seed {seed}: RSS grew by {growth >> 20} MiB (bound {RSS_BOUND >> 20} MiB); {summary}"
    )

    # Malformed input is refused and counted: each refused hello, each closed
    # link (as a protocol error, with code 4002), each malformed record.
    m = b.metrics
    assert m.total("mesh_link_refused_total") == tally.refused, summary
    assert set(tally.closed) <= {CLOSE_PROTOCOL}, summary
    closed = sum(tally.closed.values())
    assert closed > 100, summary
    await wait_for(lambda: FUZZ_PEER not in b.sessions, 10, "the fuzz session to end")
    assert m.get("mesh_link_protocol_errors_total", peer=FUZZ_PEER) == closed, summary
    assert m.get("mesh_dead_letters_total", reason="malformed record") == tally.junk_records, (
        summary
    )
    assert tally.junk_records > 50, summary
    # Nothing a link raised went unexpected: no link task restarted for a non-protocol fault.
    assert m.get("mesh_task_restarts_total", task=f"link[{FUZZ_PEER}]") == closed, summary
