"""Header value encoding shared by the HTTP and NATS bindings (reference §3.2, §5.2).

Senders percent-encode the canonical string form of an attribute one Unicode
character at a time: space, ``"``, ``%`` and every character outside
U+0021..U+007E become the ``%XY`` escapes of their UTF-8 bytes (uppercase
hex).  Receivers first unwrap an RFC 7230 quoted-string (older senders produce
them), then percent-decode exactly once; lowercase hex and needlessly encoded
characters are accepted, while a malformed ``%`` escape or bytes that are not
valid UTF-8 (the spec's example is the overlong ``%C0%A0``) are rejected.

MQTT user properties are *not* percent-encoded; they carry the raw canonical
string (:func:`canonical_string`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import quote

from mesh.core.errors import InvalidEvent
from mesh.core.event import AttrValue, valid_names

__all__ = ["canonical_string", "percent_decode", "percent_encode"]

# Left as is by the encoder: U+0021..U+007E except '"' (0x22) and '%' (0x25).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_NEEDS_ENCODING = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_HEX_DIGITS = "0123456789abcdefABCDEF"
# Every two-character hex escape body ("a0", "A0", "aF", ...) -> byte value.
_HEX: dict[str, int] = {a + b: int(a + b, 16) for a in _HEX_DIGITS for b in _HEX_DIGITS}


def canonical_string(value: AttrValue) -> str:
    """The canonical string encoding of an attribute value (reference §1.3).

    Booleans become ``true``/``false`` (never Python's ``True``), integers
    their decimal form, strings stay as they are.
    """
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return value


def percent_encode(value: str) -> str:
    """Percent-encode a canonical string for a ``ce-`` header value.

    ``Euro € 😀`` becomes ``Euro%20%E2%82%AC%20%F0%9F%98%80``.  A string with
    an unpaired surrogate cannot be encoded in UTF-8 and raises InvalidEvent.
    """
    if _NEEDS_ENCODING.search(value) is None:
        return value
    try:
        return quote(value, safe=_SAFE)
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            f"value cannot be encoded as UTF-8: {exc.reason} at index {exc.start}"
        ) from None


def percent_decode(value: str) -> str:
    """Decode a received ``ce-`` header value (quoted-string, then one round of %XY).

    Raises InvalidEvent for a malformed quoted-string, a malformed ``%``
    escape, or percent-escaped bytes that are not valid UTF-8.
    """
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _unwrap_quoted_string(value)
    if "%" not in value:
        if not value.isascii():
            _check_encodable(value)
        return value
    parts = value.split("%")
    try:
        out = bytearray(parts[0].encode("utf-8"))
        for part in parts[1:]:
            byte = _HEX.get(part[:2])
            if byte is None:
                raise InvalidEvent(f"invalid percent-encoding: malformed escape '%{part[:2]}'")
            out.append(byte)
            if len(part) > 2:
                out += part[2:].encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            f"invalid percent-encoding: value contains {exc.reason} at index {exc.start}"
        ) from None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = bytes(out[exc.start : exc.end]).hex(" ").upper()
        raise InvalidEvent(
            f"invalid percent-encoding: bytes are not valid UTF-8 ({exc.reason}: {bad})"
        ) from None


def _unwrap_quoted_string(value: str) -> str:
    """Undo RFC 7230 §3.2.6 quoted-string escaping of a value wrapped in ``"``."""
    inner = value[1:-1]
    if "\\" not in inner and '"' not in inner:
        return inner
    out: list[str] = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\":
            if i + 1 == n:
                raise InvalidEvent("malformed quoted-string: it ends with an escaped quote")
            out.append(inner[i + 1])
            i += 2
        elif c == '"':
            raise InvalidEvent("malformed quoted-string: unescaped '\"' inside")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _check_encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(f"invalid header value: {exc.reason} at index {exc.start}") from None


def _decode_header(header: str, attribute: str, value: str) -> str:
    """:func:`percent_decode` with the header name prefixed to any error reason."""
    try:
        return percent_decode(value)
    except InvalidEvent as exc:
        raise InvalidEvent(f"header {header}: {exc.reason}", attribute) from None


class _HeaderPlan(NamedTuple):
    """How to read the ``ce-`` headers of one header layout (a tuple of names)."""

    attrs: tuple[str, ...]
    """Attribute names, lower-case, in header order (first of any duplicates)."""
    headers: tuple[str, ...]
    """The matching header names, as given."""
    values: Callable[[Mapping[str, str]], tuple[str, ...]]
    """Returns the values of those headers, in the same order."""
    content_type: str | None
    """The name of the Content-Type header, as given, if there is one."""
    duplicate: str | None
    """An attribute named by two headers that differ only in case."""
    names_ok: bool
    """All attribute names are valid and the required ones are present."""


_PLANS: dict[tuple[str, ...], _HeaderPlan] = {}
_PLANS_MAX = 512  # layouts remembered
_PLAN_HEADERS_MAX = 64  # headers in a layout worth remembering


def _header_plan(headers: Mapping[str, str]) -> _HeaderPlan:
    """The (cached) plan for this header layout; names compare case-insensitively.

    Messages on one link nearly always carry the same header names in the
    same order, so the name handling is done once per layout and each
    message costs one ``itemgetter`` call.
    """
    key = tuple(headers)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _make_plan(key)
        if len(_PLANS) < _PLANS_MAX and len(key) <= _PLAN_HEADERS_MAX:
            _PLANS[key] = plan
    return plan


def _make_plan(key: tuple[str, ...]) -> _HeaderPlan:
    names: list[str] = []
    attrs: list[str] = []
    content_type: str | None = None
    duplicate: str | None = None
    for name in key:
        lname = name.lower()
        if lname.startswith("ce-"):
            attr = lname[3:]
            if attr in attrs:
                duplicate = attr
            else:
                names.append(name)
                attrs.append(attr)
        elif lname == "content-type" and content_type is None:
            content_type = name
    values: Callable[[Mapping[str, str]], tuple[str, ...]]
    if len(names) >= 2:
        values = operator.itemgetter(*names)
    elif names:
        only = names[0]

        def values(headers: Mapping[str, str]) -> tuple[str, ...]:
            return (headers[only],)
    else:

        def values(headers: Mapping[str, str]) -> tuple[str, ...]:
            return ()

    return _HeaderPlan(
        tuple(attrs), tuple(names), values, content_type, duplicate, valid_names(attrs)
    )


def _decode_values(
    plan: _HeaderPlan, headers: Mapping[str, str]
) -> tuple[dict[str, AttrValue], str | None]:
    """The ``ce-`` header values of a binary-mode message, percent-decoded, by attribute.

    Also returns ``"".join`` of the values when none needed decoding (else
    None), for :func:`mesh.core.event.validate_attributes`.
    """
    values = plan.values(headers)
    joined = "".join(values)
    # Equal lengths by construction; zip's strict= keyword alone costs 25% here.
    if "%" not in joined and '"' not in joined and joined.isascii():
        return dict(zip(plan.attrs, values)), joined  # noqa: B905
    decoded = list(values)
    for i, value in enumerate(decoded):
        if "%" in value or '"' in value or not value.isascii():
            decoded[i] = _decode_header(plan.headers[i], plan.attrs[i], value)
    return dict(zip(plan.attrs, decoded)), None  # noqa: B905
