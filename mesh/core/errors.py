"""The gateway's exceptions: one tree, typed fields, messages built here.

    MeshError
    ├── ConfigError              a configuration file or value is wrong (path + hint)
    │   └── ConfigErrors         several ConfigError found at once
    ├── EventError               an event or message is not acceptable
    │   ├── InvalidEvent         breaks a CloudEvents rule (reason, attribute)
    │   ├── EventTooLarge        bigger than the configured limit
    │   ├── SchemaViolation      its data fails a configured JSON Schema (path: message)
    │   └── TransformError       an egress transform failed on it (the expression's error)
    ├── TemplateError            a template cannot be compiled or rendered
    ├── FilterError              a subscription filter is invalid
    │   └── CesqlError           a CESQL expression does not parse (position)
    ├── LinkError                a peer link failed
    │   ├── LinkRefused          the other side refused the hello (reason)
    │   └── LinkProtocolError    a frame broke the link protocol
    ├── BridgeError              a local broker failed (broker name)
    │   ├── BrokerUnavailable    cannot connect / connection lost
    │   └── PublishError         the broker refused or did not confirm a publish
    │       └── InvalidTopic     the topic or subject cannot be published to (permanent)
    ├── StoreError               the durable store failed
    ├── InvalidRequest           an API request body or query is wrong (field, reason)
    ├── TooManyClients           a bounded API resource (tail clients) is at its limit
    └── Overloaded               not now: try again after ``retry_after`` seconds
        ├── Backpressure         an outbox is full and its policy is ``block``
        └── StoreFull            the disk is full: nothing new can be committed

Broker-library exceptions never leave a bridge: bridges translate them into
``BridgeError`` subclasses with ``raise ... from exc`` (one mapping per bridge,
as httpx's ``map_httpcore_exceptions``); anything a bridge does not map is a
bug that its supervisor logs, counts and restarts from.
"""

from __future__ import annotations

from mesh.core.secrets import mask_url_credentials

__all__ = [
    "Backpressure",
    "BridgeError",
    "BrokerUnavailable",
    "CesqlError",
    "ConfigError",
    "ConfigErrors",
    "EventError",
    "EventTooLarge",
    "FilterError",
    "InvalidEvent",
    "InvalidRequest",
    "InvalidTopic",
    "LinkError",
    "LinkProtocolError",
    "LinkRefused",
    "MeshError",
    "Overloaded",
    "PublishError",
    "SchemaViolation",
    "StoreError",
    "StoreFull",
    "TemplateError",
    "TooManyClients",
    "TransformError",
]


class MeshError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(MeshError):
    """One configuration problem, located by a dotted path like ``egress[0].to``."""

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        # One line, whatever a key or a value in the file held.
        self.path = path = _one_line(path, 120)
        self.message = message = _one_line(message, 240)
        self.hint = hint = _one_line(hint, 120) if hint else hint
        text = f"{path}: {message}" if path else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def _one_line(text: str, most: int) -> str:
    """``text`` with control characters escaped, cut to ``most`` characters."""
    if any(c < " " or c == "\x7f" for c in text):
        text = "".join(
            c if c >= " " and c != "\x7f" else c.encode("unicode_escape").decode() for c in text
        )
    return text if len(text) <= most else text[: most - 1] + "…"


class ConfigErrors(MeshError):
    """Every problem found in one configuration source, reported together."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


class EventError(MeshError):
    """An event or message cannot be accepted; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InvalidEvent(EventError):
    """The input breaks a CloudEvents rule."""

    def __init__(self, reason: str, attribute: str | None = None) -> None:
        self.attribute = attribute
        super().__init__(reason)


class EventTooLarge(EventError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"event of {size} bytes exceeds the limit of {limit} bytes")


class SchemaViolation(EventError):
    """The event's data fails a JSON Schema of ``schemas:``; ``reason`` names the path."""


class TransformError(EventError):
    """An egress rule's transform failed on an event; retrying cannot help."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        super().__init__(f"transform of egress {rule} failed: {reason}")


class TemplateError(MeshError):
    def __init__(self, template: str, reason: str) -> None:
        self.template = template
        self.reason = reason
        super().__init__(f"template {template!r}: {reason}")


class FilterError(MeshError):
    """A subscription filter is not valid."""


class CesqlError(FilterError):
    """A CESQL expression does not parse; ``position`` is 0-based."""

    def __init__(self, expression: str, position: int, reason: str) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        super().__init__(f"CESQL parse error at position {position}: {reason}")


class LinkError(MeshError):
    """A peer link failed."""

    def __init__(self, peer: str, reason: str) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"link {peer}: {reason}")


class LinkRefused(LinkError):
    """The other side refused the hello; nothing was exchanged."""


class LinkProtocolError(LinkError):
    """A frame broke the link protocol."""


class BridgeError(MeshError):
    """A local broker failed."""

    def __init__(self, broker: str, reason: str) -> None:
        # A reason may quote a URL (a webhook, a server): never its password.
        reason = mask_url_credentials(reason)
        self.broker = broker
        self.reason = reason
        super().__init__(f"broker {broker}: {reason}")


class BrokerUnavailable(BridgeError):
    """Cannot connect to the broker, or the connection was lost."""


class PublishError(BridgeError):
    """A publish was refused or not confirmed.

    ``permanent`` is true when retrying the same message cannot succeed (a
    webhook answering 400, an invalid topic); ``retry_after`` is the delay the
    broker asked for, in seconds, when it gave one.
    """

    def __init__(
        self,
        broker: str,
        reason: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(broker, reason)


class InvalidTopic(PublishError):
    """The topic or subject cannot be published to; retrying cannot help."""

    def __init__(self, broker: str, topic: str, reason: str) -> None:
        self.topic = topic
        super().__init__(broker, f"cannot publish to {topic!r}: {reason}", permanent=True)


class StoreError(MeshError):
    """The durable store failed."""


class InvalidRequest(MeshError):
    """A request to the node's API is wrong; ``field`` names what."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TooManyClients(MeshError):
    """``what`` already has its ``limit`` of clients."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"{what} already has its limit of {limit} clients; try again later")


class Overloaded(MeshError):
    """Not now: nothing was written; the same work may succeed after ``retry_after`` s.

    Whoever raised it has written nothing, so the caller keeps the work and
    withholds its acknowledgement: a broker keeps the message, an HTTP client
    gets 503 with ``Retry-After``, a peer's credit runs out.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Backpressure(Overloaded):
    """An outbox is full and its overflow policy is ``block``: retry later."""

    def __init__(self, outbox: str, retry_after: float = 1.0) -> None:
        self.outbox = outbox
        super().__init__(f"outbox {outbox} is full; not accepting new events", retry_after)


class StoreFull(Overloaded):
    """The store cannot commit new data (the disk is full); deletes still work."""

    def __init__(self, path: str, retry_after: float = 1.0) -> None:
        self.path = path
        super().__init__(f"store {path} is full; not accepting new events", retry_after)
