"""CloudEvents codecs: the JSON event format and the HTTP, MQTT and NATS bindings.

Every decoder returns :class:`mesh.core.event.Event` objects and raises only
:class:`mesh.core.errors.InvalidEvent` for bad input; every encoder takes an
``Event`` and a :class:`Mode`.  The rules implemented are those of
``shared/reference/cloudevents-bindings.md`` (CloudEvents 1.0.3-wip texts):

* :mod:`mesh.core.codec.jsonformat` - the JSON format, single events and batches;
* :mod:`mesh.core.codec.jsontext` - the text of a JSON ``data`` member, as sent;
* :mod:`mesh.core.codec.headers` - percent-encoding of ``ce-`` header values;
* :mod:`mesh.core.codec.http`, :mod:`mesh.core.codec.mqtt`, :mod:`mesh.core.codec.nats` -
  the protocol bindings;
* :mod:`mesh.core.codec.sdk` - conversion to and from the ``cloudevents`` SDK 2.x.
"""

from __future__ import annotations

import enum

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "Mode",
    "canonical_string",
    "decode_batch",
    "decode_http",
    "decode_mqtt",
    "decode_nats",
    "decode_structured",
    "encode_batch",
    "encode_http",
    "encode_mqtt",
    "encode_nats",
    "encode_structured",
    "from_sdk",
    "percent_decode",
    "percent_encode",
    "to_sdk",
]


class Mode(enum.StrEnum):
    """How a message carries an event (or that it carries none)."""

    BINARY = "binary"
    STRUCTURED = "structured"
    BATCH = "batch"
    RAW = "raw"
    """The message is not a CloudEvent."""
    DATA = "data"
    """The message carries the event's data alone (egress only: ``mode: data``)."""


# Mode must exist before the submodules import it from this package.
from mesh.core.codec.headers import canonical_string, percent_decode, percent_encode  # noqa: E402
from mesh.core.codec.http import decode_http, encode_http  # noqa: E402
from mesh.core.codec.jsonformat import (  # noqa: E402
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    decode_batch,
    decode_structured,
    encode_batch,
    encode_structured,
)
from mesh.core.codec.mqtt import decode_mqtt, encode_mqtt  # noqa: E402
from mesh.core.codec.nats import decode_nats, encode_nats  # noqa: E402
from mesh.core.codec.sdk import from_sdk, to_sdk  # noqa: E402
