"""The bridge plugin contract: what a bridge registers and what the node gives it.

A bridge is the thin edge between a node and one kind of local broker. Its
package registers a :class:`BridgeSpec` under the ``mesh.bridges`` entry-point
group (``[project.entry-points."mesh.bridges"]`` in pyproject.toml); the node
loads every spec once at start-up (:func:`load_specs`) and from then on
dispatches on the spec, never on a broker kind's name:

- ``config`` — the pydantic model of a ``brokers.<name>`` entry, a subclass of
  :class:`mesh.config.BrokerModel` whose ``kind`` is ``Literal["<kind>"]``; the
  configuration's broker union is built from the registered models;
- ``syntax`` — how the protocol writes topics and wildcards (:class:`TopicSyntax`);
- ``binding(cfg)`` — the CloudEvents binding (:class:`Binding`): decode a
  received message, encode an event in a content mode;
- ``capabilities(cfg)`` — what the protocol can do (:class:`Capabilities`);
  configuration checks and the node use them instead of kind names;
- ``check_ingress`` / ``check_egress`` — what the library would reject in a
  rule (a queue group with wildcards, a publish topic with wildcards),
  reported by ``mesh validate`` before a node ever starts;
- ``factory(cfg, ctx)`` — a :class:`Bridge` for one connection attempt;
- ``asyncapi(cfg)`` — how the node's AsyncAPI document shows the broker
  (:class:`mesh.core.asyncapi.BrokerDoc`), optional.

A bridge connects and subscribes, puts what it receives into the node's
:class:`~mesh.runtime.inbox.Inbox` as :class:`Delivery` objects (acked only once
the node made the event durable), publishes batches (returning once the
broker confirmed each message), and closes. Library exceptions never leave a
bridge: each maps them in one place onto the :class:`~mesh.core.errors.BridgeError`
tree. Reconnects, retries, storage, routing and backpressure live in ``mesh``,
once, for every protocol.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mesh.core.asyncapi import BrokerDoc
from mesh.core.codec import Mode
from mesh.core.errors import InvalidEvent, MeshError, Overloaded, PublishError
from mesh.core.event import Event
from mesh.core.ingress import Rejected
from mesh.core.message import Message, Subscribe
from mesh.core.topics import TopicSyntax

if TYPE_CHECKING:
    from aiohttp import web

    from mesh.config.models import BrokerModel, EgressRule, IngressRule
    from mesh.runtime.inbox import Inbox
    from mesh.runtime.lifecycle import TaskScope
    from mesh.runtime.metrics import Metrics

__all__ = [
    "Binding",
    "Bridge",
    "BridgeContext",
    "BridgeSpec",
    "Capabilities",
    "Delivery",
    "HttpIngress",
    "Message",
    "Outcome",
    "Subscribe",
    "load_specs",
]

Settle = Callable[[], Awaitable[None] | None]


@dataclass(slots=True)
class Outcome:
    """What became of a delivery: the ids made durable and what was rejected."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Delivery:
    """A received message whose acknowledgement the node controls.

    ``ack`` and ``nack`` may be plain functions (paho) or coroutine functions
    (JetStream); either way the node awaits the result. A source whose
    sender waits for an answer (an HTTP request) passes ``answer``: it learns
    the :class:`Outcome`, or the :class:`~mesh.core.errors.Overloaded` reason
    for a refusal. Such a delivery is not *held* when the node cannot take it:
    it is refused at once, while a held one (MQTT, JetStream) simply stays
    unacknowledged at the broker until the node can take it.
    """

    __slots__ = ("_ack", "_answer", "_nack", "message")

    def __init__(
        self,
        message: Message,
        ack: Settle | None = None,
        nack: Settle | None = None,
        answer: Callable[[Outcome | Overloaded], None] | None = None,
    ) -> None:
        self.message = message
        self._ack = ack
        self._nack = nack
        self._answer = answer

    @property
    def hold(self) -> bool:
        """Whether the node may keep this delivery waiting instead of refusing it."""
        return self._answer is None

    @property
    def wants_outcome(self) -> bool:
        return self._answer is not None

    async def ack(self, outcome: Outcome | None = None) -> None:
        """The event is durable in the node (or can never be): let the broker forget it."""
        if self._ack is not None:
            result = self._ack()
            if result is not None:
                await result
        if self._answer is not None:
            self._answer(outcome or Outcome())

    async def nack(self, why: Overloaded | None = None) -> None:
        """The node could not take the event: let the broker redeliver it if it can."""
        if self._nack is not None:
            result = self._nack()
            if result is not None:
                await result
        if self._answer is not None:
            self._answer(why or Overloaded("not accepted"))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a protocol (as configured) can do; the node and the checks ask this.

    ``redelivery``: unacknowledged messages come again after a reconnect (an
    MQTT persistent session, a JetStream consumer), so ingress is
    at-least-once; without it a message in flight when the node stops is lost.
    ``confirm``: a publish returns only once the broker confirmed it.
    ``no_local``: the node never receives what it published itself.
    """

    receive: bool = True
    publish: bool = True
    modes: frozenset[Mode] = frozenset({Mode.BINARY, Mode.STRUCTURED, Mode.DATA})
    redelivery: bool = False
    queue_groups: bool = False
    no_local: bool = False
    confirm: bool = True
    dedup_ids: bool = False
    """The broker drops a re-publish carrying the same :attr:`Message.dedup_id`."""


class Binding(Protocol):
    """The CloudEvents binding of a protocol: messages to events and back (pure)."""

    def decode(self, message: Message) -> list[Event | InvalidEvent] | None:
        """The events a message carries, an error in place of each invalid one.

        None means the message is not a CloudEvent (a raw payload, to be
        wrapped by the ingress rule's templates). An InvalidEvent raised for
        the whole message rejects it.
        """
        ...

    def encode(self, event: Event, mode: Mode, topic: str) -> Message:
        """The message carrying ``event`` to ``topic`` in ``mode``; raises InvalidEvent."""
        ...


@runtime_checkable
class Bridge(Protocol):
    """One connection to one broker."""

    async def connect(self, subscriptions: Sequence[Subscribe]) -> None:
        """Connect and subscribe; raise BrokerUnavailable on failure.

        Deliveries go to the context's inbox from then on; when the connection
        is lost the bridge calls ``inbox.lost(reason)``.
        """

    async def publish(self, messages: Sequence[Message]) -> list[PublishError | None]:
        """Publish in order; one result per message, None when the broker confirmed it."""
        ...

    async def close(self) -> None:
        """Disconnect; pending deliveries are not acked."""


HttpHandler = Callable[["web.Request", str], Awaitable["web.StreamResponse | None"]]


class HttpIngress(Protocol):
    """The node's HTTP server, as a receive side for bridges that take HTTP requests.

    ``POST /events/<topic>`` goes to the handlers in the order they were served;
    a handler returns None for a topic it has no subscription for.
    """

    def serve(self, broker: str, handler: HttpHandler) -> Callable[[], None]:
        """Route requests to ``handler``; the returned function stops it."""
        ...


@dataclass(slots=True)
class BridgeContext:
    """What the node gives a bridge for one connection attempt."""

    broker: str
    node_id: str
    inbox: Inbox
    tasks: TaskScope
    metrics: Metrics
    max_event_size: int = 256 * 1024
    http: HttpIngress | None = None


def _no_checks(cfg: Any, rule: Any) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    """A bridge plugin: everything the node knows about one broker kind."""

    kind: str
    config: type[BrokerModel]
    syntax: TopicSyntax
    factory: Callable[[Any, BridgeContext], Bridge]
    binding: Callable[[Any], Binding]
    capabilities: Callable[[Any], Capabilities]
    check_ingress: Callable[[Any, IngressRule], list[tuple[str, str]]] = _no_checks
    """``(key, problem)`` pairs for an ingress rule, e.g. ``("queue_group", ...)``."""
    check_egress: Callable[[Any, EgressRule], list[tuple[str, str]]] = _no_checks
    """``(key, problem)`` pairs for an egress rule of this broker, e.g. ``("target", ...)``."""
    summary: str = ""
    describe: Callable[[Any], str] | None = None
    """How messages name one configured broker, e.g. ``MQTT 3.1.1``; default: the kind."""
    asyncapi: Callable[[Any], BrokerDoc] | None = None
    """How the node's AsyncAPI document shows one configured broker: protocol, host
    (never credentials) and the operation bindings of its rules; default: the kind."""


@functools.cache
def load_specs() -> Mapping[str, BridgeSpec]:
    """The bridge registry: broker kind -> spec, from the ``mesh.bridges`` entry points."""
    out: dict[str, BridgeSpec] = {}
    for ep in importlib.metadata.entry_points(group="mesh.bridges"):
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plug-in must say so, not vanish
            raise MeshError(f"cannot load bridge {ep.name!r} ({ep.value}): {exc}") from exc
        if not isinstance(spec, BridgeSpec):
            raise MeshError(f"bridge {ep.name!r} ({ep.value}) is not a BridgeSpec")
        if spec.kind != ep.name:
            raise MeshError(f"bridge {ep.name!r} ({ep.value}) declares kind {spec.kind!r}")
        out[spec.kind] = spec
    return out
