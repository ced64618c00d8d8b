"""NATS bridge (nats-py): core NATS, and JetStream when ``jetstream: true``.

Thin by design: connect, subscribe, hand over deliveries, publish, close.
nats-py's own reconnect is off: the node's supervisor owns reconnects.

Core NATS: ingress is at-most-once (the server does not redeliver, so a
message in flight when the node stops is lost); a publish is confirmed by a
flush (a PING/PONG round trip after the batch). A batch's PUB/HPUB commands
are written into nats-py's buffer directly (its ``_pending`` list, a private
API the bridge tests pin) rather than one ``publish`` coroutine per message.

JetStream: ingress pulls from a durable consumer per subscription and acks
each message only when the node calls :meth:`Delivery.ack`, after the event
is durable; unacknowledged messages are redelivered. Egress publishes with
``Nats-Msg-Id`` = the event's (source, id), so the stream de-duplicates a
re-publish after a crash, and a message counts as delivered only when its
PubAck arrived.
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
from nats.js.client import JetStreamContext
from nats.protocol.command import hpub_cmd, pub_cmd

from mesh.config import NatsBroker
from mesh.core.errors import BrokerUnavailable, PublishError
from mesh.plugins import Delivery, Message, Subscribe

__all__ = ["NatsBridge"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
FLUSH_TIMEOUT = 10
PUBLISH_TIMEOUT = 10.0
FETCH_BATCH = 256


_NEWLINES = str.maketrans("", "", "\r\n")


def _command(m: Message) -> bytes:
    """The PUB or HPUB protocol command for one message."""
    if not m.headers:
        return pub_cmd(m.topic, "", m.payload)
    hdr = (
        "NATS/1.0\r\n"
        + "".join(f"{k}: {str(v).translate(_NEWLINES)}\r\n" for k, v in m.headers.items())
        + "\r\n"
    )
    return hpub_cmd(m.topic, "", hdr.encode(), m.payload)


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def _flush(nc: Client) -> None:
    """``nc.flush()``: write what is buffered and wait for the server's PONG.

    nats-py waits with ``asyncio.wait_for``, which in Python 3.11 swallows a
    cancellation arriving just as the PONG does: the egress worker publishing
    then carries on after a reload or shutdown cancelled it. This waits with
    ``asyncio.timeout`` instead, and shields the PONG future (nats-py resolves
    it when the PONG arrives and must not find it cancelled). Uses nats-py's
    ``_send_ping`` and ``_reading_task`` (private, pinned by the bridge tests).
    """
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc._reading_task is None or nc._reading_task.done():
        await nc.flush(FLUSH_TIMEOUT)  # nats-py's fallback without a read loop
        return
    pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    await nc._send_ping(pong)
    async with asyncio.timeout(FLUSH_TIMEOUT):
        await asyncio.shield(pong)


class NatsBridge:
    """A bridge to one NATS server."""

    def __init__(self, name: str, cfg: NatsBroker, node_id: str) -> None:
        self.name = name
        self.cfg = cfg
        self.node_id = node_id
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._queue: asyncio.Queue[Delivery | _Lost] = asyncio.Queue()
        self._pullers: list[asyncio.Task[None]] = []
        self._taken = asyncio.Event()

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
            self._nc = nc = await nats.connect(
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
            if self.cfg.jetstream:
                self._js = nc.jetstream()
                for sub in subscriptions:
                    psub = await self._js.pull_subscribe(sub.topic, durable=sub.durable)
                    self._pullers.append(
                        asyncio.create_task(self._pull(psub), name=f"nats[{self.name}].pull")
                    )
            else:
                for sub in subscriptions:
                    await nc.subscribe(
                        sub.topic,
                        queue=sub.queue_group or "",
                        cb=self._on_msg,
                        pending_msgs_limit=-1,
                        pending_bytes_limit=-1,
                    )
            await nc.flush(FLUSH_TIMEOUT)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise BrokerUnavailable(
                self.name, f"cannot connect to {self.cfg.url}: {exc or type(exc).__name__}"
            ) from exc

    async def _on_msg(self, msg: Msg) -> None:
        self._queue.put_nowait(Delivery(self._message(msg)))

    @staticmethod
    def _message(msg: Msg) -> Message:
        headers = msg.headers or {}
        ct = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        return Message(msg.subject, msg.data, headers, ct)

    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        """Fetch from a durable consumer whenever the node has taken the last batch."""
        try:
            while True:
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=5)
                except TimeoutError:
                    continue
                for m in msgs:
                    self._queue.put_nowait(Delivery(self._message(m), m.ack, m.nak))
                # Fetch more only once the node has taken these (bounded in memory).
                self._taken.clear()
                await self._taken.wait()
        except (nats.errors.Error, OSError) as exc:
            self._queue.put_nowait(_Lost(f"JetStream fetch failed: {exc}"))

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
        if self._queue.empty():
            self._taken.set()
        return out

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return [PublishError(self.name, "not connected")] * len(messages)
        if self._js is not None:
            return await self._publish_js(self._js, messages)
        results: list[PublishError | None] = [None] * len(messages)
        commands: list[bytes] = []
        for i, m in enumerate(messages):
            if not m.topic or any(c in m.topic for c in " \t\r\n"):
                results[i] = PublishError(self.name, f"invalid subject {m.topic!r}", permanent=True)
                continue
            if len(m.payload) > nc.max_payload:
                results[i] = PublishError(
                    self.name,
                    f"payload of {len(m.payload)} bytes exceeds the server's "
                    f"max_payload {nc.max_payload}",
                    permanent=True,
                )
                continue
            commands.append(_command(m))
        try:
            # The whole batch goes into nats-py's write buffer at once (one write,
            # one PING after it) instead of one coroutine and flusher wake-up per
            # message, which cost a sixth of an egress node's CPU.
            nc._pending.extend(commands)
            nc._pending_data_size += sum(len(c) for c in commands)
            nc.stats["out_msgs"] += len(commands)
            await _flush(nc)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            err = PublishError(self.name, f"publish not confirmed: {exc or type(exc).__name__}")
            return [r or err for r in results]
        return results

    async def _publish_js(
        self, js: JetStreamContext, messages: Sequence[Message]
    ) -> list[PublishError | None]:
        futures: list[asyncio.Future[Any] | PublishError] = []
        for m in messages:
            try:
                futures.append(
                    await js.publish_async(m.topic, m.payload, headers=dict(m.headers) or None)
                )
            except (nats.errors.BadSubjectError, nats.errors.MaxPayloadError) as exc:
                futures.append(
                    PublishError(self.name, f"cannot publish to {m.topic!r}: {exc}", permanent=True)
                )
            except (OSError, nats.errors.Error) as exc:
                futures.append(PublishError(self.name, f"publish failed: {exc}"))
        pending = [f for f in futures if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=PUBLISH_TIMEOUT)
        results: list[PublishError | None] = []
        for f in futures:
            if isinstance(f, PublishError):
                results.append(f)
            elif not f.done():
                f.cancel()
                results.append(PublishError(self.name, "no JetStream ack in time"))
            elif f.exception() is not None:
                # Transient, even "no stream": the event waits in its outbox until a
                # stream captures the subject, rather than being dead-lettered.
                failure = f.exception()
                reason = f"JetStream refused the publish: {failure or type(failure).__name__}"
                results.append(PublishError(self.name, reason))
            else:
                results.append(None)
        return results

    async def close(self) -> None:
        for t in self._pullers:
            t.cancel()
        for t in self._pullers:
            with contextlib.suppress(BaseException):
                await t
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
