"""NATS bridge (nats-py), core NATS.

Thin by design: connect, subscribe (optionally in a queue group), hand over
deliveries, publish, close. nats-py's own reconnect is off: the node's
supervisor owns reconnects and backoff.

Core NATS ingress is at-most-once: the server does not redeliver, so a
message is acknowledged by nothing and is lost if the node is down. A
publish is confirmed by a flush (a PING/PONG round trip after the batch):
the server has received every message of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from mesh.bridge import Delivery, Message, Subscribe
from mesh.config import NatsBroker
from mesh.errors import BrokerUnavailable, PublishError

__all__ = ["NatsBridge"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
FLUSH_TIMEOUT = 10


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class NatsBridge:
    """A bridge to one NATS server."""

    def __init__(self, name: str, cfg: NatsBroker, node_id: str) -> None:
        self.name = name
        self.cfg = cfg
        self.node_id = node_id
        self._nc: Client | None = None
        self._queue: asyncio.Queue[Delivery | _Lost] = asyncio.Queue()

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        opts: dict[str, Any] = {}
        if self.cfg.user:
            opts["user"] = self.cfg.user
            opts["password"] = self.cfg.password
        if self.cfg.token:
            opts["token"] = self.cfg.token

        async def closed() -> None:
            self._queue.put_nowait(_Lost("connection closed"))

        async def error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                log.error(
                    "nats %s: slow consumer, messages dropped by the client: %s", self.name, exc
                )
            else:
                log.debug("nats %s: %s", self.name, exc)

        try:
            self._nc = await nats.connect(
                self.cfg.url,
                name=f"mesh-{self.node_id}-{self.name}",
                allow_reconnect=False,
                # Never receive our own publishes (egress), so ingress cannot loop them.
                no_echo=True,
                connect_timeout=CONNECT_TIMEOUT,
                closed_cb=closed,
                error_cb=error,
                **opts,
            )
            for sub in subscriptions:
                await self._nc.subscribe(
                    sub.topic,
                    queue=sub.queue_group or "",
                    cb=self._on_msg,
                    pending_msgs_limit=-1,
                    pending_bytes_limit=-1,
                )
            await self._nc.flush(FLUSH_TIMEOUT)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(
                self.name, f"cannot connect to {self.cfg.url}: {exc or type(exc).__name__}"
            ) from exc

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        ct = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        self._queue.put_nowait(Delivery(Message(msg.subject, msg.data, headers, ct)))

    async def receive(self, limit: int) -> list[Delivery]:
        first = await self._queue.get()
        if isinstance(first, _Lost):
            raise BrokerUnavailable(self.name, first.reason)
        out = [first]
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Lost):
                self._queue.put_nowait(item)
                break
            out.append(item)
        return out

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return [PublishError(self.name, "not connected")] * len(messages)
        results: list[PublishError | None] = [None] * len(messages)
        try:
            for i, m in enumerate(messages):
                try:
                    await nc.publish(m.topic, m.payload, headers=dict(m.headers) or None)
                except (nats.errors.BadSubjectError, nats.errors.MaxPayloadError) as exc:
                    results[i] = PublishError(
                        self.name, f"cannot publish to {m.topic!r}: {exc}", permanent=True
                    )
            await nc.flush(FLUSH_TIMEOUT)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            err = PublishError(self.name, f"publish not confirmed: {exc or type(exc).__name__}")
            return [r or err for r in results]
        return results

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
