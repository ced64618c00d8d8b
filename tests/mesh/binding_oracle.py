"""A test-side CloudEvents decoder, written from the binding specs, not from mesh.core.codec.

It reads what plain paho and nats-py clients received, following
/work/shared/reference/cloudevents-bindings.md (§2 JSON format, §4 MQTT,
§5 NATS), so the bindings matrix checks the project's codec against an
independent reading of the same rules. Data is kept as the raw bytes on the
wire in binary mode; in structured mode as the JSON format gives it.
HTTP uses the ``cloudevents`` SDK instead (see :func:`http_sdk`).

Deliberately small: only what a well-formed message needs, and a failed
assertion for anything the rules forbid.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat

__all__ = ["Decoded", "http_sdk", "json_format", "mqtt5", "mqtt311", "nats"]

STRUCTURED = "application/cloudevents"  # a prefix (reference §4.2, §5.1)


@dataclass
class Decoded:
    """An event as the oracle read it.

    ``attrs`` maps attribute names to values: strings in binary mode,
    JSON values in structured mode. ``data`` is the payload bytes (binary
    mode, ``data_base64``), the UTF-8 of a string ``data``, or, for JSON-like
    data in structured mode, ``None`` with the parsed value in ``json``.
    """

    mode: str
    attrs: dict[str, Any]
    data: bytes | None
    json: Any = None


def _json_like(ct: str | None) -> bool:
    """§2.1: */json or */*+json after stripping parameters; absent counts as JSON."""
    if ct is None:
        return True
    media = ct.split(";", 1)[0].strip().lower()
    return media.endswith(("/json", "+json"))


def json_format(payload: bytes) -> Decoded:
    """The JSON event format (§2): attributes are top-level members, data per §2.2."""
    obj = orjson.loads(payload)
    assert isinstance(obj, dict), "a structured event is a JSON object"
    attrs = {k: v for k, v in obj.items() if k not in ("data", "data_base64") and v is not None}
    assert not ("data" in obj and "data_base64" in obj), "data and data_base64 are exclusive"
    if "data_base64" in obj:
        return Decoded("structured", attrs, base64.b64decode(obj["data_base64"], validate=True))
    if "data" not in obj:
        return Decoded("structured", attrs, None)
    if _json_like(attrs.get("datacontenttype")):
        return Decoded("structured", attrs, None, obj["data"])
    assert isinstance(obj["data"], str), "non-JSON data in a JSON event is a string"
    return Decoded("structured", attrs, obj["data"].encode())


def mqtt5(payload: bytes, content_type: str | None, user: Iterable[tuple[str, str]]) -> Decoded:
    """MQTT 5 (§4.2-4.4): the Content Type property picks the mode; in binary mode
    it is datacontenttype and every User Property is an attribute, its name
    unchanged (no ce- prefix) and its value the raw canonical string."""
    if content_type is not None and content_type.lower().startswith(STRUCTURED):
        return json_format(payload)
    attrs: dict[str, Any] = {}
    for name, value in user:
        if name == "datacontenttype":
            continue  # the Content Type property is authoritative (§4.3)
        assert name not in attrs, f"attribute {name!r} appears twice"
        assert re.fullmatch(r"[a-z0-9]+", name), f"{name!r} is not an attribute name"
        attrs[name] = value
    if content_type is not None:
        attrs["datacontenttype"] = content_type
    return Decoded("binary", attrs, payload)


def mqtt311(payload: bytes) -> Decoded:
    """MQTT 3.1.1 (§4.1): structured only, the JSON format implied."""
    return json_format(payload)


def _header_value(raw: str) -> str:
    """§3.2 (and §5.2 for NATS): unwrap a quoted-string, then one strict
    percent-decoding; invalid UTF-8 is an error, not U+FFFD."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
    return unquote_to_bytes(raw).decode("utf-8")


def nats(payload: bytes, headers: Mapping[str, str] | None) -> Decoded:
    """NATS (§5): a Content-Type header starting with application/cloudevents is
    structured; otherwise ``ce-`` headers are the attributes, datacontenttype
    included (``ce-datacontenttype``), percent-decoded as in HTTP."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    ct = lower.get("content-type")
    if ct is not None and ct.lower().startswith(STRUCTURED):
        return json_format(payload)
    if not lower:
        return json_format(payload)  # a v1.0.2 publisher: no headers, structured (§5.1)
    attrs = {k[3:]: _header_value(v) for k, v in lower.items() if k.startswith("ce-")}
    return Decoded("binary", attrs, payload)


def http_sdk(headers: Mapping[str, str], body: bytes) -> Decoded:
    """HTTP through the ``cloudevents`` SDK (its from_http), the independent oracle.

    Its data is lossy (JSON parsed, bytes decoded to text), so binary-mode data
    is taken as the raw body, which §3.2 says it is. ``time`` comes back as
    a datetime.
    """
    ce = sdk_http.from_http(sdk_http.HTTPMessage(dict(headers), body), JSONFormat())
    attrs = dict(ce.get_attributes())
    ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    if ct.lower().startswith(STRUCTURED):
        data = ce.get_data()
        if isinstance(data, bytes):
            return Decoded("structured", attrs, data)
        if isinstance(data, str) and not _json_like(attrs.get("datacontenttype")):
            return Decoded("structured", attrs, data.encode())
        return Decoded("structured", attrs, None, data)
    return Decoded("binary", attrs, body)
