"""Peer-link control frames: building them, and parsing what a peer sends (pure).

Everything a peer sends is input. :func:`parse_control` turns a text frame
into a typed frame or raises :class:`~mesh.core.errors.LinkProtocolError`
naming what was wrong (the link is then closed: a peer that breaks the
protocol is broken or hostile). Interests are checked one by one
(:func:`parse_interest`): a bad one is refused with a reason and the rest
of the message still applies, so a bad pattern, filter or path vector is
never stored, persisted or passed on.

Versions. A hello carries the range of link-protocol versions the dialer
speaks (``versions: [oldest, newest]``; a version-1 node sends only
``version: 1``) and the acceptor answers with the newest both speak, so a
mesh can be upgraded one node at a time. Version 2 adds ``notice`` frames:
the receiver tells the sender which interests it refused and why. Version 3
adds ``reach`` to interests frames: path vectors (origin first, the sender
last) of the nodes behind the sender, its own id included, so the receiver
can check the origin of every event the sender passes on
(:meth:`mesh.core.routing.RoutingTable.behind`). The sender's first
interests frame, with its reach, comes before its first batch. Version 4
adds canaries (``{"type": "canary", "seq": n}``, answered with
``{"type": "canary-ok", "seq": n}`` once the receiver has taken every batch
before it and committed the canary to its store) and the ingress time as a
seventh field of event records (:mod:`mesh.core.envelope`); a version-4 node
strips that field from the records it sends to an older peer. Version-4
links also carry ``catalog`` frames (:func:`parse_catalog`, event-catalog
entries); a node that does not know them ignores them (:class:`Unknown`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.core import catalog as _catalog
from mesh.core.catalog import Reported
from mesh.core.errors import FilterError, LinkProtocolError
from mesh.core.event import ATTRIBUTE_NAME
from mesh.core.filters import compile_filter
from mesh.core.routing import Interest, SubKey, subscription_key
from mesh.core.topics import Pattern, TopicError

__all__ = [
    "LINK_VERSIONS",
    "MAX_INTERESTS",
    "MAX_INTEREST_PATH",
    "MAX_PATTERN",
    "Ack",
    "Canary",
    "CanaryOk",
    "CatalogEntries",
    "Control",
    "Credit",
    "Hello",
    "InterestRefused",
    "Interests",
    "Notice",
    "Unknown",
    "Welcome",
    "dump",
    "negotiate",
    "parse_catalog",
    "parse_control",
    "parse_hello",
    "parse_interest",
    "parse_reach",
    "parse_welcome",
]

LINK_VERSIONS = (1, 4)
"""The oldest and newest link-protocol versions this node speaks."""
MAX_INTERESTS = 10_000  # interests in one message
MAX_PATTERN = 1024  # characters of an interest's pattern
MAX_INTEREST_PATH = 32  # nodes in an interest's path vector
MAX_CREDIT = 1 << 24  # events a single grant may announce
NODE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def dump(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


# -- the handshake -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    node: str
    region: str
    versions: tuple[int, int]
    token: str


@dataclass(frozen=True, slots=True)
class Welcome:
    node: str
    region: str
    version: int


def _object(text: str | bytes, peer: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise LinkProtocolError(peer, f"control frame is not JSON: {exc}") from None
    if type(obj) is not dict:
        raise LinkProtocolError(peer, f"control frame must be a JSON object, not {_kind(obj)}")
    kind = obj.get("type")
    if type(kind) is not str:
        raise LinkProtocolError(peer, "control frame without a string 'type'")
    return obj


def _kind(value: object) -> str:
    return type(value).__name__ if value is not None else "null"


def _int(obj: Mapping[str, Any], key: str, peer: str, *, low: int = 0, high: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value <= high:
        raise LinkProtocolError(
            peer, f"{obj.get('type')} frame: {key!r} must be an integer in [{low}, {high}]"
        )
    return value


def _str(obj: Mapping[str, Any], key: str, default: str = "", limit: int = 256) -> str:
    value = obj.get(key, default)
    return value[:limit] if isinstance(value, str) else default


def parse_hello(text: str | bytes) -> Hello | str:
    """The dialer's hello, or the reason to refuse it."""
    try:
        obj = _object(text, "?")
    except LinkProtocolError as exc:
        return f"expected a hello frame ({exc.reason})"
    if obj["type"] != "hello":
        return "expected a hello frame"
    node = obj.get("node")
    if not isinstance(node, str) or not NODE_ID.fullmatch(node):
        return "hello without a valid node id"
    versions = obj.get("versions")
    if (
        isinstance(versions, list)
        and len(versions) == 2
        and all(type(v) is int and v > 0 for v in versions)
        and versions[0] <= versions[1]
    ):
        span = (versions[0], versions[1])
    elif type(obj.get("version")) is int and obj["version"] > 0:
        span = (obj["version"], obj["version"])  # version 1 nodes send only this
    else:
        return "hello without a protocol version"
    token = obj.get("token", "")
    return Hello(node, _str(obj, "region"), span, token if isinstance(token, str) else "")


def negotiate(theirs: tuple[int, int], ours: tuple[int, int] = LINK_VERSIONS) -> int | None:
    """The newest version both sides speak, or None."""
    best = min(theirs[1], ours[1])
    return best if best >= max(theirs[0], ours[0]) else None


def hello(node: str, region: str, token: str, versions: tuple[int, int] = LINK_VERSIONS) -> str:
    # ``version`` is the oldest we speak: a version-1 acceptor checks only it.
    return dump(
        {
            "type": "hello",
            "node": node,
            "region": region,
            "version": versions[0],
            "versions": list(versions),
            "token": token,
        }
    )


def parse_welcome(
    text: str | bytes, peer: str, versions: tuple[int, int] = LINK_VERSIONS
) -> Welcome | str:
    """The acceptor's answer: a Welcome, or the reason it refused us (a ``refused`` frame)."""
    obj = _object(text, peer)
    if obj["type"] == "refused":
        return _str(obj, "reason", "no reason given", 1024) or "no reason given"
    if obj["type"] != "welcome":
        raise LinkProtocolError(peer, f"expected welcome, got {obj['type'][:64]!r}")
    node = obj.get("node")
    if not isinstance(node, str) or not NODE_ID.fullmatch(node):
        raise LinkProtocolError(peer, "welcome without a valid node id")
    version = obj.get("version", 1)
    if type(version) is not int or not versions[0] <= version <= versions[1]:
        raise LinkProtocolError(peer, f"welcome with unsupported protocol version {version!r}")
    return Welcome(node, _str(obj, "region"), version)


# -- after the handshake --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    credit: int


@dataclass(frozen=True, slots=True)
class Credit:
    events: int


@dataclass(frozen=True, slots=True)
class InterestRefused:
    """One interest a peer sent that this node does not take, and why."""

    code: str  # a short label for metrics: malformed, origin, pattern, filter, path, limit
    detail: str
    origin: str | None = None
    pattern: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "pattern": self.pattern, "reason": self.detail}


@dataclass(slots=True)
class Interests:
    full: bool
    add: list[Interest] = field(default_factory=list)
    remove: list[tuple[str, SubKey]] = field(default_factory=list)
    refused: list[InterestRefused] = field(default_factory=list)
    reach: list[tuple[str, ...]] | None = None  # version 3; None when the frame has none


@dataclass(frozen=True, slots=True)
class Notice:
    """Version 2: what the other side refused of what we sent."""

    refused: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Canary:
    """Version 4: answer with ``canary-ok`` once every batch before it is committed."""

    seq: int


@dataclass(frozen=True, slots=True)
class CanaryOk:
    seq: int


@dataclass(slots=True)
class CatalogEntries:
    """A peer's catalog entries (``{"type": "catalog", "entries": [...]}``), as parsed.

    Sent on version-4 links; an older node ignores the frame (:class:`Unknown`).
    Entries that break a rule are in ``refused`` as (code, detail), never stored.
    """

    entries: list[Reported] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Unknown:
    type: str


Control = Ack | Credit | Interests | Notice | Canary | CanaryOk | CatalogEntries | Unknown


def parse_control(text: str | bytes, peer: str) -> Control:
    """A control frame of an established link; LinkProtocolError if it is malformed."""
    obj = _object(text, peer)
    kind = obj["type"]
    if kind == "ack":
        return Ack(
            _int(obj, "seq", peer, high=1 << 62),
            _int(obj, "credit", peer, high=MAX_CREDIT) if "credit" in obj else -1,
        )
    if kind == "credit":
        return Credit(_int(obj, "events", peer, high=MAX_CREDIT))
    if kind == "interests":
        return _interests(obj, peer)
    if kind == "canary":
        return Canary(_int(obj, "seq", peer, high=1 << 62))
    if kind == "canary-ok":
        return CanaryOk(_int(obj, "seq", peer, high=1 << 62))
    if kind == "catalog":
        return parse_catalog(obj, peer)
    if kind == "notice":
        refused = obj.get("refused")
        items = [r for r in refused if isinstance(r, dict)] if isinstance(refused, list) else []
        return Notice(items[:100])
    return Unknown(kind[:64])


def _interests(obj: dict[str, Any], peer: str) -> Interests:
    full = obj.get("full", False)
    add = obj.get("add", [])
    remove = obj.get("remove", [])
    if type(full) is not bool or not isinstance(add, list) or not isinstance(remove, list):
        raise LinkProtocolError(peer, "interests frame: full must be a boolean, add/remove lists")
    out = Interests(full)
    if len(add) + len(remove) > MAX_INTERESTS:
        out.refused.append(
            InterestRefused(
                "limit",
                f"{len(add) + len(remove)} interests in one frame (at most {MAX_INTERESTS})",
            )
        )
        add = add[:MAX_INTERESTS]
        remove = remove[: max(0, MAX_INTERESTS - len(add))]
    for item in add:
        parsed = parse_interest(item, peer)
        if isinstance(parsed, InterestRefused):
            out.refused.append(parsed)
        else:
            out.add.append(parsed)
    for item in remove:
        key = _removal(item)
        if key is None:
            out.refused.append(InterestRefused("malformed", "a removal without origin and pattern"))
        else:
            out.remove.append(key)
    if "reach" in obj:
        out.reach = parse_reach(obj["reach"], peer, out.refused)
    return out


def parse_reach(value: Any, peer: str, refused: list[InterestRefused]) -> list[tuple[str, ...]]:
    """Reach paths: each from a node (first) to ``peer`` (last), node ids, each once."""
    if not isinstance(value, list):
        refused.append(InterestRefused("malformed", "reach must be a list of paths"))
        return []
    if len(value) > MAX_INTERESTS:
        refused.append(
            InterestRefused("limit", f"{len(value)} reach paths (at most {MAX_INTERESTS})")
        )
        value = value[:MAX_INTERESTS]
    paths: list[tuple[str, ...]] = []
    for path in value:
        if (
            isinstance(path, list)
            and 1 <= len(path) <= MAX_INTEREST_PATH
            and all(isinstance(p, str) and NODE_ID.fullmatch(p) for p in path)
            and path[-1] == peer
            and len(set(path)) == len(path)
        ):
            paths.append(tuple(path))
        else:
            refused.append(
                InterestRefused(
                    "path",
                    f"reach path {str(path)[:200]} must list node ids from a node to {peer}, "
                    "each once",
                )
            )
    return paths


def _removal(item: Any) -> tuple[str, SubKey] | None:
    if not isinstance(item, dict):
        return None
    origin, pattern = item.get("origin"), item.get("pattern")
    if not isinstance(origin, str) or not isinstance(pattern, str):
        return None
    try:
        return origin, subscription_key(pattern, item.get("filter"))
    except (TypeError, ValueError):
        return None


def parse_interest(item: Any, peer: str) -> Interest | InterestRefused:
    """Validate one advertised interest from ``peer``.

    The origin is a node id, the pattern a valid mesh pattern, the filter a
    valid filter within its limits, and the path runs from the origin (first)
    to ``peer`` (last), each node once.
    """
    if not isinstance(item, dict):
        return InterestRefused("malformed", f"an interest must be an object, not {_kind(item)}")
    origin, pattern, path = item.get("origin"), item.get("pattern"), item.get("path")
    if not isinstance(origin, str) or not NODE_ID.fullmatch(origin):
        return InterestRefused("origin", f"invalid origin {str(origin)[:64]!r}")
    if not isinstance(pattern, str):
        return InterestRefused("pattern", "pattern must be a string", origin)
    if len(pattern) > MAX_PATTERN:
        return InterestRefused(
            "pattern", f"pattern of {len(pattern)} characters (at most {MAX_PATTERN})", origin
        )
    try:
        Pattern.compile(pattern)
    except TopicError as exc:
        return InterestRefused("pattern", f"invalid pattern: {exc.reason}", origin, pattern)
    spec = item.get("filter")
    if spec is not None:
        try:
            compile_filter(spec)
        except FilterError as exc:
            return InterestRefused("filter", f"invalid filter: {exc}", origin, pattern)
    if (
        not isinstance(path, list)
        or not 1 <= len(path) <= MAX_INTEREST_PATH
        or not all(isinstance(p, str) and NODE_ID.fullmatch(p) for p in path)
    ):
        return InterestRefused(
            "path", f"path must list 1 to {MAX_INTEREST_PATH} node ids", origin, pattern
        )
    if path[0] != origin or path[-1] != peer or len(set(path)) != len(path):
        return InterestRefused(
            "path",
            f"path {' > '.join(path)[:200]} must run from the origin to {peer}, each node once",
            origin,
            pattern,
        )
    up = item.get("up", True)
    return Interest(origin, pattern, spec, tuple(path), up if type(up) is bool else True)


# -- catalog frames -------------------------------------------------------------------

_MAX_COUNT = 1 << 62
_MAX_TIME = 1e11  # epoch seconds: far in the future, but finite


class _Bad(Exception):
    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail


def parse_catalog(obj: Mapping[str, Any], peer: str) -> CatalogEntries:
    """The entries of a catalog frame from ``peer``; a malformed one is refused, not fatal.

    Every field is checked and bounded (:mod:`mesh.core.catalog`'s limits): at
    most ``MAX_ENTRIES`` entries, strings of at most ``MAX_STR`` characters,
    lists of at most ``MAX_LIST`` items, paths of node ids from the reporting
    node to ``peer``, each once. Example attributes named like a secret are
    dropped here too: what a peer reports is shown by this node.
    """
    out = CatalogEntries()
    entries = obj.get("entries")
    if not isinstance(entries, list):
        out.refused.append(("malformed", "catalog frame: entries must be a list"))
        return out
    if len(entries) > _catalog.MAX_ENTRIES:
        out.refused.append(
            ("limit", f"{len(entries)} catalog entries (at most {_catalog.MAX_ENTRIES})")
        )
        entries = entries[: _catalog.MAX_ENTRIES]
    for item in entries:
        try:
            out.entries.append(_reported(item, peer))
        except _Bad as bad:
            out.refused.append((bad.code, bad.detail))
    return out


def _reported(item: Any, peer: str) -> Reported:
    if not isinstance(item, dict):
        raise _Bad("malformed", f"a catalog entry must be an object, not {_kind(item)}")
    type_ = item.get("type")
    if not isinstance(type_, str) or not 0 < len(type_) <= _catalog.MAX_STR:
        raise _Bad("malformed", f"catalog entry type must be 1 to {_catalog.MAX_STR} characters")
    topics = _strings(item, "topics", type_)
    for t in topics:
        try:
            Pattern.compile(t)
        except TopicError as exc:
            raise _Bad("malformed", f"catalog entry {type_[:64]!r}: topic {exc.reason}") from None
    producers = _strings(item, "producers", type_)
    if not all(NODE_ID.fullmatch(p) for p in producers):
        raise _Bad("malformed", f"catalog entry {type_[:64]!r}: producers must be node ids")
    path = item.get("path")
    if (
        not isinstance(path, list)
        or not 1 <= len(path) <= _catalog.MAX_LIST
        or not all(isinstance(p, str) and NODE_ID.fullmatch(p) for p in path)
        or path[-1] != peer
        or len(set(path)) != len(path)
    ):
        raise _Bad(
            "path",
            f"catalog entry {type_[:64]!r}: path must list 1 to {_catalog.MAX_LIST} node ids "
            f"from the reporting node to {peer}, each once",
        )
    count = item.get("count")
    if type(count) is not int or not 0 <= count <= _MAX_COUNT:
        raise _Bad("malformed", f"catalog entry {type_[:64]!r}: count must be a natural number")
    return Reported(
        type_,
        _strings(item, "sources", type_),
        topics,
        producers,
        count,
        _number(item, "rate", type_),
        _number(item, "first_seen", type_),
        _number(item, "last_seen", type_),
        _example(item.get("example"), type_),
        tuple(path),
    )


def _strings(item: Mapping[str, Any], key: str, type_: str) -> list[str]:
    value = item.get(key)
    if (
        not isinstance(value, list)
        or len(value) > _catalog.MAX_LIST
        or not all(isinstance(v, str) and 0 < len(v) <= _catalog.MAX_STR for v in value)
    ):
        raise _Bad(
            "malformed",
            f"catalog entry {type_[:64]!r}: {key} must be a list of at most "
            f"{_catalog.MAX_LIST} strings of 1 to {_catalog.MAX_STR} characters",
        )
    return list(dict.fromkeys(value))


def _number(item: Mapping[str, Any], key: str, type_: str) -> float:
    value: Any = item.get(key)
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= _MAX_TIME:
        raise _Bad("malformed", f"catalog entry {type_[:64]!r}: {key} must be a number >= 0")
    return float(value)


def _example(value: Any, type_: str) -> dict[str, Any] | None:
    if value is None:
        return None
    bad = _Bad("malformed", f"catalog entry {type_[:64]!r}: malformed example")
    if not isinstance(value, dict) or not set(value) <= {"attributes", "data", "truncated"}:
        raise bad
    attrs = value.get("attributes", {})
    if not isinstance(attrs, dict) or len(attrs) > 2 * _catalog.MAX_LIST:
        raise bad
    kept: dict[str, Any] = {}
    for name, v in attrs.items():
        if not isinstance(name, str) or len(name) > 64 or not ATTRIBUTE_NAME.fullmatch(name):
            raise bad
        if isinstance(v, str):
            if len(v) > _catalog.MAX_STR:
                raise bad
        elif type(v) not in (int, bool):
            raise bad
        if not _catalog.example_attribute(name):
            continue  # named like a secret: never shown, whoever sent it
        kept[name] = v
    out: dict[str, Any] = {"attributes": kept}
    if "data" in value:
        data = value["data"]
        if not isinstance(data, str) or len(data) > _catalog.EXAMPLE_DATA:
            raise bad
        out["data"] = data
    if "truncated" in value:
        if type(value["truncated"]) is not bool:
            raise bad
        out["truncated"] = value["truncated"]
    return out
