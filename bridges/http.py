"""HTTP bridge (aiohttp client): webhook egress.

HTTP ingress is served by the node's own server (``POST /events/<topic>``),
so this bridge only publishes: one POST per message to the rendered URL.
A 2xx answer confirms; 4xx other than 408 and 429 is permanent (the same
request cannot succeed); 408, 429 and 5xx are transient, honouring
``Retry-After`` when given in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aiohttp

from mesh.config import HttpBroker
from mesh.core.errors import BrokerUnavailable, PublishError
from mesh.plugins import Delivery, Message, Subscribe

__all__ = ["HttpBridge"]


class HttpBridge:
    """Webhook delivery for one ``kind: http`` broker."""

    def __init__(self, name: str, cfg: HttpBroker, node_id: str) -> None:
        self.name = name
        self.cfg = cfg
        self.node_id = node_id
        self._session: aiohttp.ClientSession | None = None
        self._closed = asyncio.Event()

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            headers={"user-agent": f"event-mesh-gateway/{self.node_id}", **self.cfg.headers},
        )

    async def receive(self, limit: int) -> list[Delivery]:
        await self._closed.wait()
        raise BrokerUnavailable(self.name, "closed")

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        return [await self._post(m) for m in messages]

    async def _post(self, m: Message) -> PublishError | None:
        if self._session is None:
            return PublishError(self.name, "not connected")
        try:
            # No Content-Type unless the event has one: aiohttp would add
            # application/octet-stream, which is not the event's datacontenttype.
            async with self._session.post(
                m.topic,
                data=m.payload,
                headers=dict(m.headers),
                skip_auto_headers=("Content-Type",),
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return None
                reason = f"webhook {m.topic} answered {resp.status} {resp.reason or ''}".rstrip()
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
                return PublishError(self.name, reason, permanent=permanent, retry_after=retry_after)
        except aiohttp.InvalidURL:
            return PublishError(self.name, f"invalid webhook URL {m.topic!r}", permanent=True)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return PublishError(self.name, f"webhook {m.topic} failed: {exc or type(exc).__name__}")

    async def close(self) -> None:
        self._closed.set()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
