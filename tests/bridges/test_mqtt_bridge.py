"""The MQTT bridge against a real Mosquitto: what it sends arrives intact and in order.

These tests pin the paho internals the bridge relies on (its own socket reads,
``_FastProperties``, paho driven by the event loop): a paho upgrade that breaks
them fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from pathlib import Path

import pytest

from bridges.mqtt import SPEC, MqttBridge
from mesh.plugins import Message, Subscribe
from mesh.runtime.inbox import Inbox
from mesh.testing import Mosquitto
from tests.helpers import open_bridge, receive_n, wait_for

N = 600  # more than one socket read and one READ_SLICE of packets


def _bridge(broker: Mosquitto, name: str, protocol: int | str = 5, **kw: object) -> MqttBridge:
    bridge, _ctx = open_bridge(
        SPEC, {"kind": "mqtt", "url": broker.url, "protocol": protocol, **kw}, name
    )
    assert isinstance(bridge, MqttBridge)
    return bridge


def _inbox(bridge: MqttBridge) -> Inbox:
    return bridge.ctx.inbox


@pytest.mark.parametrize("protocol", [5, "3.1.1"])
async def test_published_messages_arrive_intact_and_in_order(
    mosquitto: Mosquitto, protocol: int | str
) -> None:
    sub = _bridge(mosquitto, f"sub-{protocol}", protocol)
    pub = _bridge(mosquitto, f"pub-{protocol}", protocol)
    await sub.connect([Subscribe("bt/+/readings", qos=1)])
    await pub.connect([])
    v5 = protocol == 5
    msgs = [
        Message(
            f"bt/dev{i % 3}/readings",
            b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200),
            content_type="application/json" if v5 else None,
            user_properties=(("ce_id", f"id-{i}"), ("ce_type", "t.x")) if v5 else (),
        )
        for i in range(N)
    ]
    try:
        results = await pub.publish(msgs)
        assert results == [None] * N, [r for r in results if r is not None][:3]
        got = await receive_n(_inbox(sub), N)
        assert [d.message.payload for d in got] == [m.payload for m in msgs]
        assert [d.message.topic for d in got] == [m.topic for m in msgs]
        if v5:
            assert all(d.message.content_type == "application/json" for d in got)
            assert [tuple(d.message.user_properties) for d in got] == [
                m.user_properties for m in msgs
            ]
        for d in got:
            await d.ack()
    finally:
        await pub.close()
        await sub.close()


async def test_a_confirmed_batch_does_not_wait_for_a_delayed_tcp_ack(mosquitto: Mosquitto) -> None:
    """Mosquitto writes PUBACKs with Nagle's algorithm on: the second PUBACK of a
    batch waits until the bridge's kernel ACKs the first, which Linux delays by
    up to 40 ms when the bridge has nothing to send. The bridge asks for quick
    ACKs after every read. Not a speed target: a stall is a 40 ms kernel timer,
    and a batch confirmed without one takes well under a millisecond here."""
    pub = _bridge(mosquitto, "pub-stall")
    await pub.connect([])
    try:
        sock = pub._sock
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        took = []
        for _ in range(21):
            started = time.monotonic()
            results = await pub.publish([Message("bt/stall", b"x" * 200) for _ in range(10)])
            took.append(time.monotonic() - started)
            assert results == [None] * 10
        assert statistics.median(took) < 0.02, [round(t * 1000, 1) for t in took]
    finally:
        await pub.close()


async def test_messages_resent_ahead_of_the_suback_do_not_stall_the_subscribe(
    tmp_path: Path,
) -> None:
    """On reconnect Mosquitto resends a persistent session's unacknowledged messages
    ahead of the SUBACK, up to its in-flight window (here above the inbox's bound),
    and the node drains the inbox only once connect() has returned: the bridge must
    read on until the SUBACK. It used to pause at the full inbox, and every reconnect
    timed out with 'no SUBACK' (a node killed under load never took its backlog)."""
    from tests.helpers import MqttClient, unique

    broker = Mosquitto(workdir=tmp_path / "mosq", extra="max_inflight_messages 6000\n")
    broker.start()
    try:
        topic = unique("resend")
        cfg = {"kind": "mqtt", "url": broker.url, "client_id": unique("s-"), "protocol": "3.1.1"}
        sub = [Subscribe(f"{topic}/#", 1)]
        first, _ = open_bridge(SPEC, cfg)
        await first.connect(sub)  # its inbox is never drained: nothing is acknowledged
        client = MqttClient(broker.url)
        try:
            items = [(f"{topic}/x", b"{}") for _ in range(5000)]
            await asyncio.to_thread(client.publish_many, items)
        finally:
            client.close()
        await asyncio.sleep(0.5)
        await first.close()
        inbox = Inbox("b")
        again, _ = open_bridge(SPEC, cfg, inbox=inbox)
        try:
            await again.connect(sub)
            got = 0
            async with asyncio.timeout(30):
                while got < 5000:
                    batch = await inbox.take(500)
                    for d in batch:
                        await d.ack()
                    got += len(batch)
        finally:
            await again.close()
    finally:
        broker.close()


@pytest.mark.parametrize("protocol", [5, "3.1.1"])
async def test_a_batch_arrives_byte_exact_at_another_client_and_every_puback_settles_it(
    mosquitto: Mosquitto, protocol: int | str
) -> None:
    """The batch path (PUBLISH packets encoded by the bridge, one write per batch,
    PUBACKs read straight from the receive buffer) seen by a plain paho client:
    payloads, topics and MQTT 5 properties byte for byte, in order. The batch is
    larger than the in-flight window, so the bridge also waits for room."""
    from tests.helpers import MqttClient, unique

    v5 = protocol == 5
    topic = unique("fast")
    client = MqttClient(mosquitto.url, protocol="5" if v5 else "3.1.1")
    client.subscribe(f"{topic}/#")
    pub = _bridge(mosquitto, f"pub-fast-{protocol}", protocol, max_inflight=100)
    await pub.connect([])
    n = 3000
    msgs = [
        Message(
            f"{topic}/d{i % 7}/\u00e9",
            b'{"n":%d,"pad":"%s"}' % (i, b"\xff\x00" * (i % 150)),
            content_type=("application/json" if i % 2 else "text/plain; x=\u2603") if v5 else None,
            user_properties=(("ce_id", f"id-{i}"), ("ce_type", "t.x"), ("ce_id", "dup"))
            if v5 and i % 3
            else (),
            retain=False,
        )
        for i in range(n)
    ]
    try:
        results = await pub.publish(msgs)
        assert results == [None] * n, [r for r in results if r is not None][:3]
        assert not pub._pending  # every PUBACK matched its message
        await wait_for(lambda: len(client.messages) >= n, 20, "the batch at the client")
        got = list(client.messages)
        assert [g.topic for g in got] == [m.topic for m in msgs]
        assert [g.payload for g in got] == [m.payload for m in msgs]
        assert all(g.qos == 1 for g in got)
        if v5:
            cts = [getattr(g.properties, "ContentType", None) for g in got]
            assert cts == [m.content_type for m in msgs]
            users = [tuple(getattr(g.properties, "UserProperty", ())) for g in got]
            assert users == [tuple(m.user_properties) for m in msgs]
        # one more batch after the first: packet ids go on, nothing is left over
        assert await pub.publish(msgs[:10]) == [None] * 10
        assert not pub._pending
    finally:
        client.close()
        await pub.close()


@pytest.mark.parametrize("protocol", [5, "3.1.1"])
async def test_a_broker_restart_mid_batch_loses_nothing(
    tmp_path: Path, protocol: int | str
) -> None:
    """What the broker confirmed before its restart is kept; what it did not is
    reported as a retryable failure, and publishing it again on the next
    connection (as the egress does) delivers everything at least once."""
    from mesh.core.errors import PublishError
    from tests.helpers import unique

    broker = Mosquitto(workdir=tmp_path / "mosq", persistence=True)
    broker.start()
    topic = unique("restart")
    sub_cfg = {"kind": "mqtt", "url": broker.url, "client_id": unique("s-"), "protocol": protocol}
    pub_cfg = {"kind": "mqtt", "url": broker.url, "client_id": unique("p-"), "protocol": protocol}
    n = 20_000
    msgs = [
        Message(
            f"{topic}/x",
            b"%06d" % i + b"." * 200,
            content_type="application/json" if protocol == 5 else None,
            user_properties=(("ce_id", str(i)),) if protocol == 5 else (),
        )
        for i in range(n)
    ]
    seen: set[bytes] = set()

    async def drain(inbox: Inbox) -> None:
        while True:
            for d in await inbox.take(500):
                seen.add(d.message.payload)
                await d.ack()

    async def subscriber() -> tuple[MqttBridge, asyncio.Task[None]]:
        sub, _ = open_bridge(SPEC, sub_cfg, "sub")
        assert isinstance(sub, MqttBridge)
        await sub.connect([Subscribe(f"{topic}/#", 1)])
        return sub, asyncio.create_task(drain(sub.ctx.inbox))

    async def stop(sub: MqttBridge, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await sub.close()

    try:
        sub, drainer = await subscriber()
        pub, _ = open_bridge(SPEC, pub_cfg, "pub")
        await pub.connect([])
        publishing = asyncio.create_task(pub.publish(msgs))
        await wait_for(lambda: len(seen) >= 1000, 20, "the first confirmed messages")
        await asyncio.to_thread(broker.restart)
        results = await publishing
        failed = [i for i, r in enumerate(results) if r is not None]
        assert 0 < len(failed) < n, "the restart did not fall mid-batch"
        assert all(isinstance(results[i], PublishError) for i in failed)
        assert not any(r.permanent for r in results if r is not None)
        await pub.close()
        await stop(sub, drainer)

        sub, drainer = await subscriber()
        pub, _ = open_bridge(SPEC, pub_cfg, "pub")
        await pub.connect([])
        try:
            again = await pub.publish([msgs[i] for i in failed])
            assert again == [None] * len(failed)
            want = {m.payload for m in msgs}
            await wait_for(lambda: seen == want, 30, "every message")
        finally:
            await pub.close()
            await stop(sub, drainer)
    finally:
        broker.close()


async def test_the_pubacks_of_a_batch_leave_in_one_write(mosquitto: Mosquitto) -> None:
    """paho writes each queued packet with its own send(); the bridge joins the
    PUBACKs acknowledged together (after one commit) into one write."""
    sub = _bridge(mosquitto, "sub-acks")
    pub = _bridge(mosquitto, "pub-acks")
    await sub.connect([Subscribe("bt/acks", qos=1)])
    await pub.connect([])
    try:
        n = 200
        assert await pub.publish([Message("bt/acks", b"%d" % i) for i in range(n)]) == [None] * n
        got = await receive_n(_inbox(sub), n)
        client = sub._client
        sends: list[int] = []
        send = client._sock_send

        def counted(buf: bytes) -> int:
            sends.append(len(buf))
            return send(buf)

        client._sock_send = counted  # type: ignore[method-assign]
        for d in got:
            await d.ack()
        await wait_for(lambda: not client._out_packet, 5, "the PUBACKs written")
        assert sends == [4 * n]
    finally:
        await pub.close()
        await sub.close()
