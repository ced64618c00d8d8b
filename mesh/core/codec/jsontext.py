"""The JSON text of a JSON-format event's ``data`` member, exactly as it arrived.

orjson parses a structured event or a batch for its attributes; the data
document is then cut out of the original bytes rather than re-serialised, so
big integers, number spellings (``1.50``), escapes, key order and whitespace
inside it survive every hop.

The scan works on a copy of the text in which every backslash escape pair is
blanked (same length): there every quote delimits a string, so ``"data"``
followed by a colon is always a key.  The first such key in a *valid* event
is the event's own, because all its other members are scalars: no nested
object that could hold a ``data`` key of its own comes before the value of
``data``.  The value then ends where its brackets balance, or (the common
case, found without scanning) at the event's closing brace when ``data`` is
the last member.  A span found any other way is checked against the value
orjson read, and the value is re-serialised if they differ (duplicate
``data`` members); so is one a caller reports as lost (:meth:`BatchData.lost`,
after an invalid batch element, whose nested objects may hold ``data`` keys).
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from mesh.core.errors import InvalidEvent

__all__ = ["BatchData", "event_data", "value_end"]

_ESCAPE_PAIR: Final = re.compile(rb"\\.", re.DOTALL)
_DATA_KEY: Final = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*')
# The next bracket outside strings (in blanked text, a string is "[^"]*").
_NEXT_BRACKET: Final = re.compile(rb'[^"\[\]{}]*+(?:"[^"]*+"[^"\[\]{}]*+)*+[\[\]{}]')
_LAST_CONTAINER: Final = re.compile(
    rb"[ \t\r\n]*:[ \t\r\n]*+(\{.*\}|\[.*\])[ \t\r\n]*\}[ \t\r\n]*\Z", re.DOTALL
)
_SCALAR: Final = re.compile(rb'"[^"]*+"|[^,}\] \t\r\n]++')
_OPENERS: Final = b"[{"
_COLON: Final = ord(":")
_RBRACE: Final = ord("}")
_CLOSER: Final = {ord("{"): ord("}"), ord("["): ord("]")}
_BETWEEN_ELEMENTS: Final = b" \t\r\n,"


def event_data(body: bytes, has_backslash: bool, value: Any) -> bytes:
    """The text of the ``data`` member of the valid event ``body``; orjson read ``value``.

    Raise InvalidEvent if ``value`` has to be re-serialised and cannot be.
    """
    if not has_backslash:
        # The hot path of every structured decode (see bench/codec.py): one
        # split and a few index checks for the common form ``"data":{…}}``.
        # Without a backslash the key is spelled literally, and a single
        # "data" in the text is the key: no duplicate and no nested key.  An
        # object or array value directly followed by the event's closing
        # brace is the last member (a member after it would end with a scalar).
        parts = body.split(b'"data"')
        if len(parts) == 2:
            tail = parts[1]
            if tail[0] == _COLON and tail[-1] == _RBRACE and tail[-2] == _CLOSER.get(tail[1]):
                return tail[1:-1]
            m = _LAST_CONTAINER.match(tail)
            if m is not None:
                return m.group(1)
    text = _ESCAPE_PAIR.sub(b"__", body) if has_backslash else body
    k = text.find(b'"data"')
    m = _DATA_KEY.search(text, max(k, 0))
    if m is None:
        return _dumps(value)
    return _verified(body[m.end() : value_end(text, m.end())], value)


class BatchData:
    """Locates the ``data`` members of the elements of one JSON batch, in order."""

    __slots__ = ("_body", "_elements", "_pos", "_text")

    def __init__(self, body: bytes, has_backslash: bool) -> None:
        self._body = body
        self._text = _ESCAPE_PAIR.sub(b"__", body) if has_backslash else body
        self._pos = 0  # the end of the last data value found
        self._elements: list[tuple[int, int]] | None = None  # once lost

    def of(self, element: int, value: Any) -> bytes:
        """The text of element ``element``'s ``data``, whose parsed value is ``value``."""
        if self._elements is None:
            start, end = self._pos, len(self._text)
        else:
            start, end = self._elements[element]
        text = self._text
        m = _DATA_KEY.search(text, start, end)
        if m is None:
            return _dumps(value)
        lo = m.end()
        hi = value_end(text, lo)
        if self._elements is None:
            self._pos = hi
        return _verified(self._body[lo:hi], value)

    def lost(self) -> None:
        """An element was skipped: locate the rest within their own elements."""
        if self._elements is None:
            self._elements = _elements(self._text)


def _verified(raw: bytes, value: Any) -> bytes:
    """``raw`` if it is the JSON text of ``value``, else ``value`` re-serialised."""
    try:
        if orjson.loads(raw) == value:
            return raw
    except orjson.JSONDecodeError:
        pass
    return _dumps(value)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(f"data cannot be re-encoded: {exc}") from None


def value_end(text: bytes, pos: int) -> int:
    """The offset just past the JSON value at ``pos`` in valid, escape-blanked JSON."""
    if text[pos] not in _OPENERS:
        m = _SCALAR.match(text, pos)
        return pos if m is None else m.end()
    depth = 0
    for m in _NEXT_BRACKET.finditer(text, pos):
        if text[m.end() - 1] in _OPENERS:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return len(text)  # only for text that is not valid JSON


def _elements(text: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each element of the JSON array in blanked ``text``."""
    spans: list[tuple[int, int]] = []
    pos, n = text.index(b"[") + 1, len(text)
    while True:
        while pos < n and text[pos] in _BETWEEN_ELEMENTS:
            pos += 1
        if pos >= n or text[pos] == ord("]"):
            return spans
        end = value_end(text, pos)
        spans.append((pos, end))
        pos = end
