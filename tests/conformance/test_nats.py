"""The conformance suite against a real nats-server: core NATS and JetStream.

Independent clients are plain nats-py connections; JetStream's stream and
consumer state (stored messages, acks pending) is read from the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from bridges.nats import SPEC
from mesh.plugins import Subscribe
from mesh.testing import NatsServer, TcpProxy
from tests.conformance.base import BridgeConformance, Facts, Overflow
from tests.conformance.wire import Collected, Sending, Wire

ACK_WAIT = 2.0  # seconds before JetStream redelivers what was not acked


class NatsWire(Wire):
    def __init__(self, server: NatsServer, proxy: TcpProxy, jetstream: bool) -> None:
        self.server = server
        self.proxy = proxy
        self.jetstream = jetstream
        self.label = "NATS JetStream" if jetstream else "core NATS"
        self.unacked_by_reconnect = False  # JetStream says (core NATS has no acks)
        self._nc: Client | None = None

    async def _client(self) -> Client:
        if self._nc is None:

            async def quiet(exc: Exception) -> None:  # the suite kills the server on purpose
                pass

            self._nc = await nats.connect(
                self.server.url, allow_reconnect=False, error_cb=quiet, connect_timeout=2
            )
        return self._nc

    def config(self, identity: str, *, proxied: bool = False) -> dict[str, Any]:
        port = self.proxy.port if proxied else self.server.port
        return {"kind": "nats", "url": f"nats://127.0.0.1:{port}", "jetstream": self.jetstream}

    async def prepare(self, tag: str) -> None:
        if not self.jetstream:
            return
        js = (await self._client()).jetstream()
        await js.add_stream(name=f"S{tag}", subjects=[f"{tag}.>"])
        await js.add_consumer(
            f"S{tag}",
            ConsumerConfig(
                durable_name=f"d{tag}",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                filter_subject=f"{tag}.>",
            ),
        )

    def topic(self, tag: str, leaf: str) -> str:
        return f"{tag}.{leaf}"

    def subscription(self, tag: str) -> Subscribe:
        return Subscribe(f"{tag}.>", durable=f"d{tag}" if self.jetstream else None)

    def bad_topics(self, tag: str) -> list[str]:
        return [f"{tag}.a b", f"{tag}.>.x", f"{tag}.*", f"{tag}..x", f"{tag}.tab\t", ""]

    async def inject(self, tag: str, payloads: Sequence[bytes], *, ordered: bool = True) -> Sending:
        nc = await self._client()
        subject = self.topic(tag, "in")
        if self.jetstream:
            js = nc.jetstream()
            for p in payloads:
                await js.publish(subject, p)  # waits for the stream's ack
        else:
            for p in payloads:
                await nc.publish(subject, p)
            await nc.flush()
        return Sending()

    async def observe(self, tag: str) -> Collected:
        seen = Collected()
        nc = await self._client()

        async def on_msg(msg: Msg) -> None:
            seen.add(msg.subject, msg.data)

        await nc.subscribe(f"{tag}.>", cb=on_msg)
        await nc.flush()
        return seen

    async def stored(self, tag: str) -> int | None:
        if not self.jetstream:
            return None
        info = await (await self._client()).jetstream().stream_info(f"S{tag}")
        return int(info.state.messages)

    async def unacked(self, tag: str) -> int | None:
        js = (await self._client()).jetstream()
        info = await js.consumer_info(f"S{tag}", f"d{tag}")
        return int(info.num_ack_pending)

    async def cut(self) -> None:
        self.proxy.reset()

    async def stop(self) -> None:
        self.server.stop()

    async def kill(self) -> None:
        self.server.kill()

    async def aclose(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()
        await self.proxy.close()


class _Nats(BridgeConformance):
    spec = SPEC
    jetstream: ClassVar[bool]
    timeouts = {
        "bridges.nats": {"FLUSH_TIMEOUT": 2, "PUBLISH_TIMEOUT": 2.0, "CONNECT_TIMEOUT": 2.0}
    }

    @pytest.fixture
    async def wire(self, tmp_path: Path) -> AsyncIterator[Wire]:
        server = NatsServer(workdir=tmp_path / "nats", jetstream=self.jetstream)
        server.start()
        proxy = await TcpProxy(server.port).start()
        try:
            yield NatsWire(server, proxy, self.jetstream)
        finally:
            server.close()


class TestCoreNats(_Nats):
    label = "core NATS"
    jetstream = False
    config = {"kind": "nats", "jetstream": False}
    facts = Facts(acknowledges=False, overflow=Overflow.DROPPED)
    why_not = {
        "redelivery": "core NATS is at-most-once: the server forgets a message once sent",
        "acknowledges": "core NATS has no acknowledgements: a delivery carries no ack",
    }


class TestJetStream(_Nats):
    label = "NATS JetStream"
    jetstream = True
    config = {"kind": "nats", "jetstream": True}
