"""The bridge conformance suite: every case once, run against every bridge.

FastStream's base-testcase pattern. :class:`BridgeConformance` holds the
cases; each bridge has one small subclass (``test_<bridge>.py``) that names its
:class:`~mesh.plugins.BridgeSpec`, a configuration, and a ``wire`` fixture: a
:class:`Wire` is the real broker plus independent clients of it (plain paho,
nats-py, aiohttp, or the in-process broker's own state), so what a case
checks never goes through the bridge under test twice.

What a protocol cannot do is read from ``SPEC.capabilities(cfg)``
(:class:`~mesh.plugins.Capabilities`: ``redelivery``, ``confirm``, ...) and,
where the spec has no word for it, from the subclass's :class:`Facts`. A case
that does not apply is skipped by :func:`requires` with the subclass's reason:
a deliberate per-protocol "cannot". A missing broker binary is an error (the
fixtures raise :class:`~mesh.testing.BrokerNotInstalled`), never a skip.

Adding a bridge means adding one subclass with its wire.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest

from mesh.core.codec import Mode
from mesh.core.errors import BrokerUnavailable, PublishError
from mesh.core.event import Event
from mesh.plugins import BridgeSpec, Capabilities, Delivery, Message
from mesh.runtime.inbox import Inbox
from tests.conformance.wire import Bridges, Opened, Wire
from tests.helpers import receive_n, unique

__all__ = ["BridgeConformance", "Facts", "Overflow", "requires"]

BATCH = 300  # several hundred: more than one socket read, one READ_SLICE, one fetch
SMALL_INBOX = 64  # the bound the stalled-consumer case asks for (a bridge may raise it)
SETTLE = 0.3  # seconds a stalled source is given to overshoot, if it would

F = TypeVar("F", bound=Callable[..., Awaitable[None]])


class Overflow(enum.Enum):
    """What a source does with what the node's full inbox has no room for."""

    HELD = "the broker keeps it until the inbox drains"
    DROPPED = "it is dropped and counted (mesh_ingress_dropped_total)"
    REFUSED = "the sender is refused (503 with Retry-After) and retries"


@dataclass(frozen=True)
class Facts:
    """What a bridge's Capabilities do not say but the suite must know."""

    acknowledges: bool = True
    """The broker (or the sender) learns of ``Delivery.ack`` and not before."""
    connects: bool = True
    """``connect`` reaches a broker process: it fails when that process is stopped,
    and the bridge reports the loss of the connection to the node's inbox."""
    killable: bool = True
    """The broker (or the webhook target) is a process the suite can kill."""
    loops: bool = True
    """What the bridge publishes reaches the broker's subscribers (its own receive side)."""
    overflow: Overflow = Overflow.HELD


# requirement name -> (what it means, is it met)
_CHECKS: dict[str, tuple[str, Callable[[Capabilities, Facts], bool]]] = {
    "receive": ("receive (Capabilities.receive)", lambda c, f: c.receive),
    "publish": ("publish (Capabilities.publish)", lambda c, f: c.publish),
    "redelivery": (
        "redeliver unacknowledged messages after a reconnect (Capabilities.redelivery)",
        lambda c, f: c.redelivery,
    ),
    "confirm": (
        "confirm a publish before it returns (Capabilities.confirm)",
        lambda c, f: c.confirm,
    ),
    "acknowledges": (
        "hold a delivery unacknowledged at the broker (Facts.acknowledges)",
        lambda c, f: f.acknowledges,
    ),
    "connects": (
        "fail to connect to a stopped broker (Facts.connects)",
        lambda c, f: f.connects,
    ),
    "killable": ("have its broker killed (Facts.killable)", lambda c, f: f.killable),
    "loops": (
        "deliver a publish to its subscribers (Facts.loops)",
        lambda c, f: f.loops,
    ),
}


def requires(*names: str) -> Callable[[F], F]:
    """Run the case only for bridges that can do all of ``names`` (see ``_CHECKS``)."""
    unknown = set(names) - set(_CHECKS)
    if unknown:
        raise ValueError(f"unknown requirements {sorted(unknown)}; known: {sorted(_CHECKS)}")

    def mark(fn: F) -> F:
        fn._conformance_requires = names  # type: ignore[attr-defined]
        return fn

    return mark


def payloads(n: int) -> list[bytes]:
    """Payloads a protocol must carry byte for byte: non-UTF-8, NUL, empty, odd JSON."""
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(bytes([i % 256]) + bytes(range(256)))  # every byte value
        elif kind == 1:
            out.append(b"\xff\xfe\x00\x80\xc0\xaf not UTF-8 #%d" % i)
        elif kind == 2:
            # JSON that a decode-and-re-encode would change: whitespace, 1.50, 1e400.
            out.append(b'{ "i" :\t%d ,\n  "v" : [ 1.50 , 1e400 ,"\\u00e9"] }\r\n' % i)
        elif kind == 3:
            out.append(f"Grüße 🌎 #{i}".encode())
        else:
            out.append(b"" if i == 4 else b"%d" % i)
    return out


async def receive_acking(inbox: Inbox, count: int, timeout: float = 20.0) -> list[Delivery]:
    """Exactly ``count`` deliveries, each acked as soon as it is taken."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            batch = await inbox.take(count - len(got))
            for d in batch:
                await d.ack()
            got += batch
    return got


class BridgeConformance:
    """Every conformance case; a subclass per bridge supplies what differs.

    A subclass sets ``label``, ``spec``, ``config`` (a broker entry: capabilities are read
    from ``spec.capabilities`` of it), ``facts``, and ``why_not`` (a reason for
    every capability or fact it lacks), and defines an async ``wire`` fixture.
    """

    label: ClassVar[str]
    spec: ClassVar[BridgeSpec]
    config: ClassVar[dict[str, Any]]
    facts: ClassVar[Facts] = Facts()
    why_not: ClassVar[dict[str, str]] = {}
    timeouts: ClassVar[dict[str, dict[str, float]]] = {}
    """Module constants lowered for the suite (module -> name -> seconds), to stay fast."""

    @classmethod
    def capabilities(cls) -> Capabilities:
        return cls.spec.capabilities(cls.spec.config.model_validate(cls.config))

    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest) -> None:
        """Skip, with the subclass's reason, a case this bridge cannot take part in."""
        needs: tuple[str, ...] = getattr(request.function, "_conformance_requires", ())
        caps, facts = self.capabilities(), self.facts
        for name in needs:
            what, met = _CHECKS[name]
            if met(caps, facts):
                continue
            reason = self.why_not.get(name)
            if not reason:
                pytest.fail(f"{type(self).__name__} lacks {name!r} but why_not gives no reason")
            pytest.skip(f"{self.label} cannot {what}: {reason}")

    @pytest.fixture(autouse=True)
    def _short_timeouts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import importlib

        for module, values in self.timeouts.items():
            mod = importlib.import_module(module)
            for name, value in values.items():
                assert hasattr(mod, name), f"{module}.{name} is gone; update timeouts"
                monkeypatch.setattr(mod, name, value)

    @pytest.fixture
    async def bridges(self, wire: Wire) -> AsyncIterator[Bridges]:
        b = Bridges(self.spec, wire)
        try:
            yield b
        finally:
            await b.aclose()
            await wire.aclose()

    async def new_tag(self, wire: Wire) -> str:
        tag = unique("cf")
        await wire.prepare(tag)
        return tag

    async def expect_unacked(
        self, wire: Wire, bridges: Bridges, sub: Opened, tag: str, expected: int
    ) -> list[bytes] | None:
        """Check the broker holds exactly ``expected`` of ``sub``'s deliveries unacked.

        Where the broker says (:meth:`Wire.unacked`), wait until it says so.
        Otherwise reconnect ``sub``'s session, publish a sentinel and count
        what comes back before it (acking it all); that closes ``sub``.
        Returns the redelivered payloads in that case.
        """
        if not wire.unacked_by_reconnect:
            deadline = asyncio.get_running_loop().time() + 10
            while (n := await wire.unacked(tag)) != expected:
                assert asyncio.get_running_loop().time() < deadline, (
                    f"the broker holds {n} unacknowledged, expected {expected}"
                )
                await asyncio.sleep(0.02)
            return None
        await bridges.close(sub)
        again = await bridges.open(sub.identity, sub.subscriptions)
        sentinel = b"sentinel " + tag.encode()
        await (await wire.inject(tag, [sentinel])).wait()
        back: list[bytes] = []
        async with asyncio.timeout(10):
            while True:
                (d,) = await again.inbox.take(1)
                await d.ack()
                if d.message.payload == sentinel:
                    break
                back.append(d.message.payload)
        assert len(back) == expected, f"{len(back)} came back after a reconnect, not {expected}"
        await bridges.close(again)
        return back

    # -- 1. order and byte fidelity --------------------------------------------------

    @requires("publish")
    async def test_published_batch_arrives_in_order_byte_for_byte(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        seen = await wire.observe(tag)
        pub = await bridges.open("pub")
        sent = payloads(BATCH)
        msgs = [Message(wire.topic(tag, f"m{i % 3}"), p) for i, p in enumerate(sent)]
        results = await pub.publish(msgs)
        assert results == [None] * BATCH, [r for r in results if r is not None][:3]
        got = await seen.wait(BATCH)
        assert len(got) == BATCH, f"{len(got) - BATCH} extra"
        assert got == sent
        assert [t for t, _p in seen.items] == [m.topic for m in msgs]

    @requires("receive")
    async def test_received_batch_arrives_in_order_byte_for_byte(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)])
        sent = payloads(BATCH)
        sending = await wire.inject(tag, sent)
        got = await receive_acking(sub.inbox, BATCH)
        assert [d.message.payload for d in got] == sent
        assert all(s == 202 for s in await sending.wait())

    # -- 2. ack only after the node confirmed -------------------------------------------

    @requires("receive", "acknowledges")
    async def test_a_delivery_is_acked_only_by_delivery_ack(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)])
        k, half = 20, 10
        sending = await wire.inject(tag, [b"a%d" % i for i in range(k)], ordered=False)
        got = await receive_n(sub.inbox, k)
        if not wire.unacked_by_reconnect:
            await self.expect_unacked(wire, bridges, sub, tag, k)
        for d in got[:half]:
            await d.ack()
        back = await self.expect_unacked(wire, bridges, sub, tag, k - half)
        if back is not None:  # seen by reconnecting: exactly the unacked half came back
            assert sorted(back) == sorted(d.message.payload for d in got[half:])
        if not sub.closed:
            for d in got[half:]:
                await d.ack()
            await self.expect_unacked(wire, bridges, sub, tag, 0)
        if sending.tasks:
            assert all(s == 202 for s in await sending.wait())

    # -- 3. redelivery after a reconnect ---------------------------------------------------

    @requires("receive", "redelivery")
    async def test_unacked_deliveries_come_back_after_a_reconnect(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)])
        sent = [b"r%d" % i for i in range(30)]
        await wire.inject(tag, sent)
        first = await receive_n(sub.inbox, len(sent))
        assert [d.message.payload for d in first] == sent
        await bridges.close(sub)  # a node that stopped before its store committed

        again = await bridges.open("sub", [wire.subscription(tag)])
        back = await receive_acking(again.inbox, len(sent))
        assert [d.message.payload for d in back] == sent
        # Acked now: nothing comes a third time.
        assert await self.expect_unacked(wire, bridges, again, tag, 0) in (None, [])

    # -- 4. publish returns only once the broker confirmed ------------------------------

    @requires("publish", "confirm")
    async def test_publish_returns_only_once_the_broker_has_it(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        seen = await wire.observe(tag)
        pub = await bridges.open("pub", proxied=True)
        sent = [b"c%d" % i + b"\x00" * 512 for i in range(200)]
        results = await pub.publish([Message(wire.topic(tag, "c"), p) for p in sent])
        assert results == [None] * len(sent)
        await wire.cut()  # the publisher's connection is gone: no late flush can help
        stored = await wire.stored(tag)
        if stored is not None:  # the broker can say at once
            assert stored == len(sent)
        assert await seen.wait(len(sent)) == sent

    @requires("publish", "confirm", "killable")
    async def test_publish_to_a_killed_broker_is_not_confirmed(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        pub = await bridges.open("pub")
        assert await pub.publish([Message(wire.topic(tag, "k"), b"before")]) == [None]
        await wire.kill()
        # At once, before the bridge may have noticed.
        results = await pub.publish([Message(wire.topic(tag, "k"), b"k%d" % i) for i in range(5)])
        assert all(isinstance(r, PublishError) for r in results), results

    # -- 5. BrokerUnavailable ----------------------------------------------------------

    @requires("connects")
    async def test_connect_to_a_stopped_broker_raises_broker_unavailable(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        await wire.stop()
        sub = bridges.create("sub", [wire.subscription(tag)])
        with pytest.raises(BrokerUnavailable):
            await sub.bridge.connect(sub.subscriptions)

    @requires("killable")
    async def test_a_killed_broker_surfaces_only_as_bridge_errors(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)])
        pub = await bridges.open("pub")
        await wire.kill()
        if self.facts.connects:  # the loss reaches the node, as BrokerUnavailable
            for o in (sub, pub):
                with pytest.raises(BrokerUnavailable):
                    async with asyncio.timeout(10):
                        await o.inbox.take(1)
        results = await pub.publish([Message(wire.topic(tag, "x"), b"after") for _ in range(3)])
        assert all(isinstance(r, PublishError) for r in results), results
        for o in (sub, pub):  # closing after a loss raises nothing either
            await bridges.close(o)

    # -- 6. a stalled consumer keeps memory bounded --------------------------------------

    @requires("receive")
    async def test_a_stalled_consumer_keeps_the_inbox_within_its_bound(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)], inbox_high=SMALL_INBOX)
        inbox = sub.inbox
        high = inbox.high  # the bridge may size it to its protocol's window
        n = 2 * high + 100
        sent = [b"s%d" % i for i in range(n)]
        sending = await wire.inject(tag, sent, ordered=False)
        overflow = self.facts.overflow
        try:
            if overflow is Overflow.HELD:
                # Filled to the bound or to the protocol's in-flight window, whichever
                # is less; then nothing more may come in.
                await _until(lambda: len(inbox) > 0, "the first deliveries")
                await _steady(lambda: len(inbox))
                assert len(inbox) < n, "the source pushed everything into the inbox"
            elif overflow is Overflow.DROPPED:
                await _until(lambda: len(inbox) + inbox.dropped == n, "every message counted")
            else:
                await _until(lambda: len(sending.answered) == n - len(inbox), "every refusal")
            assert inbox.most <= high, f"the inbox held {inbox.most} > its bound {high}"
            held = len(inbox)
            if overflow is Overflow.HELD:
                got = await receive_acking(inbox, n)
                assert [d.message.payload for d in got] == sent  # the broker kept the rest
                assert inbox.most <= high
            elif overflow is Overflow.DROPPED:
                got = await receive_acking(inbox, held)
                assert inbox.dropped == n - held > 0
                metric = sub.ctx.metrics.get(
                    "mesh_ingress_dropped_total", broker=sub.ctx.broker, reason="slow consumer"
                )
                assert metric == inbox.dropped
            else:
                got = await receive_acking(inbox, held)
                statuses = await sending.wait()
                assert statuses.count(202) == held
                assert statuses.count(503) == n - held > 0
        finally:
            sending.cancel()

    # -- 8. every content mode the binding offers survives the bridge --------------------

    @requires("publish", "receive", "loops")
    async def test_each_content_mode_arrives_as_the_same_event(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        """Capabilities.modes names the modes; metadata (properties, headers) and
        data bytes must survive one bridge publishing and another receiving."""
        tag = await self.new_tag(wire)
        sub = await bridges.open("sub", [wire.subscription(tag)])
        pub = await bridges.open("pub")
        binding = self.spec.binding(self.spec.config.model_validate(self.config))
        modes = sorted(self.capabilities().modes, key=lambda m: m.value)
        events = [
            Event(
                {
                    "specversion": "1.0",
                    "id": f"e-{mode.value}",
                    "source": "/conformance",
                    "type": "com.example.conformance",
                    "time": "2026-12-03T07:00:00.5Z",
                    "datacontenttype": "application/octet-stream",
                    "tenant": "Euro € 😀 100%",
                },
                bytes(range(256)),
            )
            for mode in modes
        ]
        msgs = [
            binding.encode(ev, mode, wire.loop_topic(tag, mode.value))
            for ev, mode in zip(events, modes, strict=True)
        ]
        publishing = asyncio.create_task(pub.publish(msgs))  # HTTP waits for the answers
        got = await receive_acking(sub.inbox, len(msgs))
        assert await publishing == [None] * len(msgs)
        for mode, ev, d in zip(modes, events, got, strict=True):
            decoded = binding.decode(d.message)
            if mode is Mode.DATA:
                assert decoded is None, f"{mode}: data only is not a CloudEvent"
                assert d.message.payload == ev.data
                continue
            assert decoded is not None and len(decoded) == 1, mode
            (one,) = decoded
            assert isinstance(one, Event), (mode, one)
            assert one.attrs == ev.attrs, mode
            assert one.data == ev.data, f"{mode}: data bytes differ"

    # -- 7. a bad topic is a permanent PublishError --------------------------------------

    @requires("publish")
    async def test_a_bad_topic_is_a_permanent_publish_error(
        self, wire: Wire, bridges: Bridges
    ) -> None:
        tag = await self.new_tag(wire)
        seen = await wire.observe(tag)
        pub = await bridges.open("pub")
        bad = wire.bad_topics(tag)
        assert bad, "a wire names at least one topic its protocol refuses"
        msgs = [
            Message(wire.topic(tag, "ok"), b"before"),
            *(Message(t, b"bad") for t in bad),
            Message(wire.topic(tag, "ok"), b"after"),
        ]
        results = await pub.publish(msgs)
        assert results[0] is None and results[-1] is None, results
        for topic, r in zip(bad, results[1:-1], strict=True):
            assert isinstance(r, PublishError) and r.permanent, (topic, r)
        assert await seen.wait(2) == [b"before", b"after"]
        # The connection is still good.
        assert await pub.publish([Message(wire.topic(tag, "ok"), b"again")]) == [None]


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _steady(value: Callable[[], int], timeout: float = 10.0) -> None:
    """Wait until ``value()`` stayed the same for SETTLE seconds (no condition to wait
    for: a stalled source must simply stop growing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = value(), loop.time()
    while loop.time() - since < SETTLE:
        assert loop.time() < deadline, "the value never settled"
        await asyncio.sleep(0.02)
        now = value()
        if now != last:
            last, since = now, loop.time()
