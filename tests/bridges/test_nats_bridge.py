"""The NATS bridge against a real nats-server: a batch written at once arrives intact.

The bridge writes a batch's PUB/HPUB commands into nats-py's pending buffer
and flushes once; a nats-py upgrade that changes that buffer fails here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridges.nats import SPEC, NatsBridge
from mesh.core.errors import BridgeError
from mesh.plugins import Message, Subscribe
from mesh.testing import NatsServer
from tests.helpers import open_bridge, receive_n


def _bridge(server: NatsServer, name: str) -> NatsBridge:
    bridge, _ctx = open_bridge(SPEC, {"kind": "nats", "url": server.url}, name)
    assert isinstance(bridge, NatsBridge)
    return bridge


N = 1000


async def test_a_published_batch_arrives_intact_and_in_order(nats_server: NatsServer) -> None:
    sub = _bridge(nats_server, "sub")
    pub = _bridge(nats_server, "pub")
    await sub.connect([Subscribe("bt.*.readings")])
    await pub.connect([])
    msgs = [
        Message(
            f"bt.dev{i % 3}.readings",
            b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200),
            # Every other message with headers: PUB and HPUB interleaved in one write.
            headers={"ce-id": f"id-{i}", "Content-Type": "application/json"} if i % 2 else {},
        )
        for i in range(N)
    ]
    try:
        assert await pub.publish(msgs) == [None] * N
        got = await receive_n(sub.ctx.inbox, N)
        assert [d.message.payload for d in got] == [m.payload for m in msgs]
        assert [d.message.topic for d in got] == [m.topic for m in msgs]
        for d, m in zip(got, msgs, strict=True):
            assert dict(d.message.headers) == dict(m.headers)
            expected_ct = "application/json" if m.headers else None
            assert d.message.content_type == expected_ct
    finally:
        await pub.close()
        await sub.close()


async def test_a_publish_cancelled_as_its_pong_arrives_is_cancelled(
    nats_server: NatsServer,
) -> None:
    """Python 3.11's wait_for (inside nats-py's flush) would return normally here,
    and an egress worker cancelled by a reload would carry on publishing."""
    pub = _bridge(nats_server, "pub")
    await pub.connect([])
    try:
        nc = pub._nc
        assert nc is not None
        task = asyncio.create_task(pub.publish([Message("bt.cancel", b"x")]))
        async with asyncio.timeout(5):
            while not nc._pongs:  # noqa: ASYNC110 - nats-py has no event for it
                await asyncio.sleep(0)
        # The PONG and the cancellation land in the same turn of the loop.
        nc._pongs.pop(0).set_result(True)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The connection is still in step: the next publish gets its own PONG.
        assert await pub.publish([Message("bt.cancel", b"y")]) == [None]
    finally:
        await pub.close()


class _TokenNats(NatsServer):
    """A nats-server that requires a token."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--auth", "s3cret-token"]


@pytest.mark.parametrize(("token", "ok"), [("s3cret-token", True), ("wrong", False)])
async def test_a_token_from_the_config_authenticates(tmp_path: Path, token: str, ok: bool) -> None:
    server = _TokenNats(workdir=tmp_path / "nats")
    server.start()
    try:
        cfg = {"kind": "nats", "url": server.url, "token": token}
        bridge, _ctx = open_bridge(SPEC, cfg, "auth")
        if ok:
            await bridge.connect([])
            assert await bridge.publish([Message("auth.x", b"x")]) == [None]
            await bridge.close()
        else:
            with pytest.raises(BridgeError, match="Authorization Violation") as exc:
                await bridge.connect([])
            assert token not in str(exc.value)
    finally:
        server.close()
