"""A protocol message as bridges hand it over, and a subscription request (pure data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Message", "Subscribe"]


@dataclass(slots=True)
class Message:
    """A protocol message: topic/subject/URL, payload, and metadata.

    ``headers`` holds NATS/HTTP headers (lower-case names for HTTP);
    ``user_properties`` MQTT 5 user properties; ``content_type`` the MQTT 5
    Content Type property or the Content-Type header. ``qos`` and ``retain``
    are publish options for protocols that have them; ``dedup_id`` is the
    event's identity for brokers that drop re-publishes of the same id
    (JetStream's ``Nats-Msg-Id``), set when the bridge asks for it.
    ``identity`` is what names a received message across redeliveries when
    its protocol has such a thing (a JetStream stream and sequence, an HTTP
    ``Idempotency-Key``): a raw payload wrapped into a CloudEvent gets an id
    derived from it, so a redelivery is a duplicate, not a second event.
    """

    topic: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    qos: int = 1
    retain: bool = False
    user_properties: Sequence[tuple[str, str]] = ()
    dedup_id: str | None = None
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """One subscription the node asks a bridge for, in the broker's syntax.

    ``durable`` names a durable consumer for brokers that keep one (JetStream);
    ``queue_group`` shares the subscription between replicas.
    """

    topic: str
    qos: int = 1
    queue_group: str | None = None
    durable: str | None = None  # JetStream durable consumer
