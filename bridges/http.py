"""HTTP bridge: ingress from ``POST /events/<topic>`` on the node's server, webhook egress.

Receive side: the bridge serves the node's ``POST /events/<topic>`` for the
topics of its ingress rules. A request becomes one delivery; the response
waits for the node: ``202`` once every event is durable, ``207`` for a batch
with some rejected events, ``400`` (``413`` when too large) with an RFC 9457
problem body naming the fault, ``503`` with ``Retry-After`` when the node
cannot take it now (its inbox, an outbox or its store is full). The request
is answered, never held: HTTP clients retry.

Publish side: one POST per message to the rendered URL. A 2xx answer
confirms; 4xx other than 408 and 429 is permanent (the same request cannot
succeed); 408, 429 and 5xx are transient, honouring ``Retry-After`` when given
in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import aiohttp
from aiohttp import web
from pydantic import Field, SecretStr

from mesh.api.responses import json_response, problem
from mesh.config import BrokerModel, EgressRule
from mesh.core.asyncapi import BrokerDoc
from mesh.core.codec import Mode, decode_http, encode_http
from mesh.core.errors import BrokerUnavailable, InvalidEvent, InvalidTopic, Overloaded, PublishError
from mesh.core.event import Event
from mesh.core.topics import MESH_SYNTAX, Pattern
from mesh.plugins import (
    BridgeContext,
    BridgeSpec,
    Capabilities,
    Delivery,
    Message,
    Outcome,
    Subscribe,
)

__all__ = ["SPEC", "HttpBinding", "HttpBridge", "HttpBrokerConfig"]

BODY_FACTOR = 64  # a request may hold a batch of up to 64 events of the maximum size
MAX_IDEMPOTENCY_KEY = 255


class HttpBrokerConfig(BrokerModel):
    kind: Literal["http"]
    timeout: float = Field(10.0, gt=0, description="Seconds per webhook request")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Added to every webhook (secrets: never shown)"
    )


class HttpBinding:
    """The CloudEvents HTTP binding: binary, structured and batch; ``data`` mode too."""

    def decode(self, message: Message) -> list[Event | InvalidEvent] | None:
        mode, events = decode_http(message.headers, message.payload)
        return None if mode is Mode.RAW else events

    def encode(self, event: Event, mode: Mode, topic: str) -> Message:
        if mode is Mode.DATA:
            ct = event.content_type
            headers = {"content-type": ct} if ct else {}
            return Message(topic, event.data or b"", headers=headers, content_type=ct)
        headers, body = encode_http(event, mode)
        return Message(topic, body, headers=headers, content_type=headers.get("content-type"))


@contextlib.contextmanager
def _mapped(broker: str, url: str) -> Iterator[None]:
    """aiohttp's exceptions as the gateway's (the one mapping of this bridge)."""
    try:
        yield
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        # NonHttpUrlClientError (ftp://...) is not an InvalidURL in aiohttp.
        raise InvalidTopic(broker, url, "not a valid http(s) URL") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise PublishError(broker, f"webhook {url} failed: {exc or type(exc).__name__}") from exc


class HttpBridge:
    """Webhook delivery and HTTP ingress for one ``kind: http`` broker."""

    def __init__(self, cfg: HttpBrokerConfig, ctx: BridgeContext) -> None:
        self.name = ctx.broker
        self.cfg = cfg
        self.ctx = ctx
        self._session: aiohttp.ClientSession | None = None
        self._patterns: list[Pattern] = []
        self._unserve: Callable[[], None] | None = None

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            headers={
                "user-agent": f"event-mesh-gateway/{self.ctx.node_id}",
                **{k: v.get_secret_value() for k, v in self.cfg.headers.items()},
            },
        )
        if subscriptions:
            if self.ctx.http is None:
                raise BrokerUnavailable(self.name, "this node serves no HTTP ingress")
            self._patterns = [Pattern.compile(s.topic) for s in subscriptions]
            self._unserve = self.ctx.http.serve(self.name, self._handle)

    # -- receive side ------------------------------------------------------------------

    async def _handle(self, request: web.Request, topic: str) -> web.StreamResponse | None:
        levels = tuple(topic.split("/"))
        if not any(p.match(levels) is not None for p in self._patterns):
            return None
        limit = self.ctx.max_event_size * BODY_FACTOR
        if request.content_length is not None and request.content_length > limit:
            return problem(
                413,
                "Request too large",
                f"request of {request.content_length} bytes exceeds {limit} bytes",
            )
        inbox = self.ctx.inbox
        if not inbox.has_room:
            return _refused(Overloaded(f"broker {self.name}: too many requests waiting"))
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        key = headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
            return problem(
                400,
                "Bad Idempotency-Key",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
            )
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Outcome | Overloaded] = loop.create_future()

        def settle(result: Outcome | Overloaded) -> None:
            if not answer.done():
                answer.set_result(result)

        message = Message(topic, body, headers, headers.get("content-type"))
        if key is not None:
            # A retried request names itself: a raw payload keeps its event id. Keys
            # are the client's: scoped by its credentials, so clients cannot collide.
            auth = headers.get("authorization")
            who = hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else "-"
            message.identity = f"http:{who}:{topic}:{key}"
        inbox.put(Delivery(message, answer=settle))
        result = await answer
        if isinstance(result, Overloaded):
            return _refused(result)
        return _respond(result)

    # -- publish side ------------------------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        return [await self._post(m) for m in messages]

    async def _post(self, m: Message) -> PublishError | None:
        if self._session is None:
            return PublishError(self.name, "not connected")
        try:
            with _mapped(self.name, m.topic):
                # No Content-Type unless the event has one: aiohttp would add
                # application/octet-stream, which is not the event's datacontenttype.
                async with self._session.post(
                    m.topic,
                    data=m.payload,
                    headers=dict(m.headers),
                    skip_auto_headers=("Content-Type",),
                ) as resp:
                    await resp.read()
        except PublishError as exc:
            return exc
        if 200 <= resp.status < 300:
            return None
        reason = f"webhook {m.topic} answered {resp.status} {resp.reason or ''}".rstrip()
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
        return PublishError(self.name, reason, permanent=permanent, retry_after=retry_after)

    async def close(self) -> None:
        if self._unserve is not None:
            self._unserve()
            self._unserve = None
        self.ctx.inbox.lost("closed")
        if self._session is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self._session.close()


def _refused(why: Overloaded) -> web.Response:
    retry = str(max(1, round(why.retry_after)))
    return problem(503, "Not accepted now", str(why), headers={"Retry-After": retry})


def _respond(outcome: Outcome) -> web.Response:
    rejected = [{"index": r.index, "reason": r.reason} for r in outcome.rejected]
    if outcome.rejected and not outcome.accepted:
        first = outcome.rejected[0]
        status = 413 if first.too_large else 400
        return problem(status, "Invalid event", first.reason, errors=rejected)
    if outcome.rejected:
        return json_response({"accepted": outcome.accepted, "rejected": rejected}, status=207)
    return json_response({"accepted": outcome.accepted}, status=202)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _check_egress(cfg: HttpBrokerConfig, rule: EgressRule) -> list[tuple[str, str]]:
    if not rule.target.startswith(("http://", "https://")):
        return [("target", "a webhook target must be an http(s) URL")]
    return []


_BINDING = HttpBinding()
_CAPABILITIES = Capabilities(redelivery=False, queue_groups=False, no_local=False, confirm=True)


def _capabilities(cfg: Any) -> Capabilities:
    return _CAPABILITIES


def _http_bindings(rule: Any) -> dict[str, Any]:
    # HTTP operation binding 0.3.0: ingress takes POST /events/<topic>, webhooks are POSTs.
    return {"http": {"method": "POST", "bindingVersion": "0.3.0"}}


def _asyncapi(cfg: HttpBrokerConfig) -> BrokerDoc:
    # No host of its own: ingress is the node's listener, each webhook's host a server.
    return BrokerDoc(
        protocol="http",
        syntax=MESH_SYNTAX,
        pathname="/events",
        webhooks=True,
        bindings=_http_bindings,
    )


SPEC = BridgeSpec(
    kind="http",
    config=HttpBrokerConfig,
    syntax=MESH_SYNTAX,
    factory=HttpBridge,
    binding=lambda cfg: _BINDING,
    capabilities=_capabilities,
    check_egress=_check_egress,
    summary="HTTP: ingress at POST /events/<topic>, webhook egress",
    asyncapi=_asyncapi,
)
