"""The CloudEvent as the mesh carries it.

An :class:`Event` holds its context attributes in a plain dict (values are
``str``, ``int`` or ``bool``; ``time`` and URIs stay in their canonical string
form, exactly as received) and its data as the bytes a binary-mode message
would carry. Keeping data as bytes makes every hop byte-exact; the JSON
format encoder embeds JSON data bytes unchanged (``orjson.Fragment``).

``json_implied`` records that the data came from a JSON-format ``data`` member
without a ``datacontenttype``: the media type is then implied to be
``application/json`` and binary encoders set it explicitly, as the JSON
format spec recommends, without inventing the attribute in the event itself.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mesh.core.errors import InvalidEvent

__all__ = [
    "ATTRIBUTE_NAME",
    "JSON_MEDIA_TYPE",
    "REQUIRED_ATTRIBUTES",
    "AttrValue",
    "Event",
    "is_json_media_type",
    "new_event_id",
    "now_rfc3339",
    "valid_names",
    "validate_attributes",
]

AttrValue = str | int | bool

REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
JSON_MEDIA_TYPE = "application/json"
_NON_EMPTY = frozenset({"id", "source", "specversion", "type", "dataschema", "subject"})
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")  # what a CloudEvents attribute may be called
_INT32 = range(-(2**31), 2**31)
_REQUIRED_SET = frozenset(REQUIRED_ATTRIBUTES)
_STRING_ONLY = frozenset({"time", "datacontenttype"})
# Names seen in valid events: the fast path of validate_attributes trusts them.
_KNOWN_NAMES: set[str] = {*REQUIRED_ATTRIBUTES, "datacontenttype", "dataschema", "subject", "time"}
# Control characters C0 and C1 are not allowed in CloudEvents strings.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ASCII_CONTROL_TO_NUL = bytes(0 if c < 0x20 or c == 0x7F else c for c in range(256))


class Event:
    """One CloudEvent: ``attrs`` (context attributes) and ``data`` (bytes or None)."""

    __slots__ = ("attrs", "data", "json_implied")

    def __init__(
        self,
        attrs: dict[str, AttrValue],
        data: bytes | None = None,
        json_implied: bool = False,
    ) -> None:
        self.attrs = attrs
        self.data = data
        self.json_implied = json_implied

    @property
    def id(self) -> str:
        return str(self.attrs["id"])

    @property
    def source(self) -> str:
        return str(self.attrs["source"])

    @property
    def type(self) -> str:
        return str(self.attrs["type"])

    @property
    def content_type(self) -> str | None:
        """The media type of ``data``: the attribute, or the implied JSON type."""
        ct = self.attrs.get("datacontenttype")
        if ct is not None:
            return str(ct)
        return JSON_MEDIA_TYPE if self.json_implied else None

    @property
    def key(self) -> tuple[str, str]:
        """The identity used for de-duplication: (``source``, ``id``)."""
        return (str(self.attrs["source"]), str(self.attrs["id"]))

    def size(self) -> int:
        """Approximate wire size: attribute names and values plus data."""
        n = len(self.data) if self.data is not None else 0
        for k, v in self.attrs.items():
            n += len(k) + (len(v) if isinstance(v, str) else 8)
        return n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.attrs == other.attrs
            and self.data == other.data
            and self.content_type == other.content_type
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        size = "none" if self.data is None else f"{len(self.data)} bytes"
        return f"Event({self.attrs!r}, data={size})"

    @classmethod
    def create(
        cls,
        type: str,
        source: str,
        data: bytes | None = None,
        *,
        id: str | None = None,
        **attrs: AttrValue,
    ) -> Event:
        """Build a valid v1.0 event; ``id`` defaults to a fresh unique id."""
        a: dict[str, AttrValue] = {
            "specversion": "1.0",
            "id": id or new_event_id(),
            "source": source,
            "type": type,
        }
        a.update(attrs)
        validate_attributes(a)
        return cls(a, data)


def valid_names(names: Iterable[str]) -> bool:
    """True if every name is a valid attribute name and the required ones are present."""
    names = set(names)
    return names >= _REQUIRED_SET and all(
        ATTRIBUTE_NAME.fullmatch(n) and n != "data" for n in names
    )


def validate_attributes(
    attrs: Mapping[str, Any],
    *,
    names_ok: bool = False,
    joined: str | None = None,
    c0_free: bool = False,
) -> None:
    """Check the CloudEvents v1.0 rules a gateway must enforce; raise InvalidEvent.

    A fast path accepts the common case without looking at each attribute:
    ``specversion`` 1.0, names known to be valid (``names_ok`` when the
    caller checked them with :func:`valid_names`, else names seen before),
    only non-empty printable strings. ``joined`` is ``"".join(values)`` when
    the caller has it; ``c0_free`` says the caller knows that no value holds
    a C0 control character (U+0000..U+001F), as a JSON document without any
    backslash guarantees. Everything else takes the full check, which gives
    the exact reason. The JSON decoder repeats this fast path inline
    (``mesh.core.codec.jsonformat._from_object``): keep the two in step.
    """
    if attrs.get("specversion") == "1.0" and (
        names_ok
        or (
            _KNOWN_NAMES.issuperset(attrs)
            and "id" in attrs
            and "source" in attrs
            and "type" in attrs
        )
    ):
        values = attrs.values()
        try:
            if joined is None:
                joined = "".join(values)  # TypeError unless all values are strings
        except TypeError:
            pass  # the full check below says which one is not
        else:
            if joined.isascii():
                # Printable ASCII: no C0 control and no DEL.  Mapping those to
                # NUL and looking for one is twice as fast as str.isprintable,
                # which looks every character up in the Unicode database.
                if c0_free:
                    printable = "\x7f" not in joined
                else:
                    printable = 0 not in joined.encode("ascii").translate(_ASCII_CONTROL_TO_NUL)
            else:
                # isprintable() excludes control characters and lone surrogates.
                printable = joined.isprintable()
            if printable and all(values):  # all are strings: all() means none is empty
                return
    _validate_fully(attrs)
    if len(_KNOWN_NAMES) < 4096:
        _KNOWN_NAMES.update(attrs.keys())


def _validate_fully(attrs: Mapping[str, Any]) -> None:
    for name in REQUIRED_ATTRIBUTES:
        if name not in attrs:
            raise InvalidEvent(f"missing required attribute '{name}'", name)
    if attrs["specversion"] != "1.0":
        raise InvalidEvent(
            f"unsupported specversion {attrs['specversion']!r}; expected '1.0'", "specversion"
        )
    for name, value in attrs.items():
        if not ATTRIBUTE_NAME.fullmatch(name):
            raise InvalidEvent(
                f"invalid attribute name {name!r}: only a-z and 0-9 are allowed", name
            )
        if name == "data":
            raise InvalidEvent("'data' is not a valid attribute name", name)
        if isinstance(value, bool | int) and (name in _NON_EMPTY or name in _STRING_ONLY):
            raise InvalidEvent(f"attribute '{name}' must be a string", name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if value not in _INT32:
                raise InvalidEvent(f"integer attribute '{name}' is outside the 32-bit range", name)
        elif isinstance(value, str):
            if not value and name in _NON_EMPTY:
                raise InvalidEvent(f"attribute '{name}' must not be empty", name)
            if _CONTROL.search(value):
                raise InvalidEvent(f"attribute '{name}' contains a control character", name)
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise InvalidEvent(
                        f"attribute {name!r} contains {exc.reason} at index {exc.start}", name
                    ) from None
        else:
            raise InvalidEvent(
                f"attribute '{name}' has unsupported type {type(value).__name__}", name
            )


def is_json_media_type(ct: str | None) -> bool:
    """True for ``*/json`` and ``*/*+json`` (parameters ignored, case-insensitive).

    A missing content type is *not* JSON here; callers decide what absence
    means in their context (the JSON format treats it as JSON).
    """
    if ct is None:
        return False
    base = ct.split(";", 1)[0].strip().lower()
    return base.endswith(("/json", "+json"))


_counter = 0
_prefix = os.urandom(6).hex()


def new_event_id() -> str:
    """A unique, roughly time-ordered id: process-random prefix, time, counter."""
    global _counter
    _counter += 1
    return f"{_prefix}-{time.time_ns() // 1000:x}-{_counter:x}"


_second = -1
_second_text = ""


def now_rfc3339() -> str:
    """The current time as an RFC 3339 timestamp in UTC with microseconds."""
    global _second, _second_text
    t = time.time()
    sec = int(t)
    if sec != _second:  # formatting the date costs more than the rest: once a second
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = sec
    return f"{_second_text}.{int((t - sec) * 1_000_000):06d}Z"
