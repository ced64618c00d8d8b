"""The event catalog: per CloudEvent type, what this node saw and what its peers told it (pure).

:meth:`Catalog.record` runs once per routed batch (:meth:`mesh.runtime.router.Router.route`)
and is built to be cheap there: one pass groups the batch by (type, source,
mesh topic, origin), and only a group the entry has not seen before does any
work beyond a counter. Everything is bounded:

- at most :data:`MAX_TYPES` types (events of types beyond it are counted in
  :attr:`Catalog.dropped`, ``mesh_catalog_types_dropped_total``);
- per type at most :data:`MAX_LIST` source patterns, mesh-topic patterns and
  producing nodes. Patterns collapse id-like path levels (any level with a
  digit, except ``v1``-style versions): sources to ``*``, mesh topics to the
  mesh wildcard ``+``, so ``telemetry/shop/dev-3`` is kept as ``telemetry/shop/+``;
- one example per type, taken from the first event and refreshed every
  :data:`EXAMPLE_REFRESH` seconds: only context attributes (extension
  attributes named like a secret are left out, URL credentials masked), and
  data truncated to :data:`EXAMPLE_DATA` bytes, JSON object keys named like a
  secret replaced by ``***``.

Sharing. :meth:`Catalog.share` builds the entries of a ``catalog`` link frame
for one peer: this node's own entries and those learned from other peers
(never the peer's own, never any whose path runs through the peer), each
with its path (the reporting node first, this node last), keeping only the
mesh topics the peer's ``export`` rules allow and no entry with none left.
:meth:`Catalog.learn` replaces what a peer reported (parsed and bounded by
:func:`mesh.core.frames.parse_control`); entries whose path contains this node
are ignored, so entries never loop. :meth:`Catalog.forget` drops a peer's
reports when its link goes down.

:meth:`Catalog.view` merges everything by type for ``GET /api/catalog``; the
consuming nodes are computed there, from the routing table's interests, not
per event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from mesh.core.errors import FilterError
from mesh.core.filters import compile_filter
from mesh.core.secrets import MASK, mask_url_credentials

if TYPE_CHECKING:
    from mesh.core.envelope import Envelope
    from mesh.core.routing import RouteInfo
    from mesh.core.rules import TopicRules

__all__ = [
    "EXAMPLE_DATA",
    "MAX_ENTRIES",
    "MAX_LIST",
    "MAX_STR",
    "MAX_TYPES",
    "Catalog",
    "Reported",
    "example_attribute",
    "example_of",
    "overlaps",
    "secret_like",
    "source_pattern",
    "topic_pattern",
]

MAX_TYPES = 1000  # types one node records
MAX_ENTRIES = 1000  # entries in one catalog frame
MAX_LIST = 16  # sources, topics, producers per type; nodes in a path
MAX_STR = 256  # characters of any string in an entry
EXAMPLE_DATA = 1024  # bytes of an example's data
EXAMPLE_REFRESH = 300.0  # seconds between refreshes of a type's example
_BUCKET = 10  # seconds per rate bucket
_BUCKETS = 6  # buckets: the rate covers the last minute
_RAW_SEEN = 256  # raw (source, topic, origin) groups remembered per type

_SECRET = re.compile(r"token|secret|passw|pwd|auth|key|credential|cookie|signature|session", re.I)
# A level with a digit (not v1-style) is an id; one with '+' or '#' could not be a
# pattern level, so it collapses too (a peer refuses an entry with a bad pattern).
_ID_LEVEL = re.compile(r"(?!v\d+$).*\d.*|.*[+#].*")
_CONTEXT = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
)
_SAFE = frozenset({"partitionkey"})  # documented extensions whose names only look secret


def secret_like(name: str) -> bool:
    """Whether an attribute or key name looks like it holds a secret."""
    return _SECRET.search(name) is not None


def example_attribute(name: str) -> bool:
    """Whether an example may show the attribute ``name``: context ones, and no secret-like."""
    return name in _CONTEXT or name in _SAFE or not secret_like(name)


def _collapse(text: str, sep: str, wild: str) -> str:
    return sep.join(wild if _ID_LEVEL.fullmatch(lvl) else lvl for lvl in text.split(sep))


def source_pattern(source: str) -> str:
    """``/shop/devices/dev-3`` → ``/shop/devices/*`` (credentials in URLs masked)."""
    return _collapse(mask_url_credentials(source), "/", "*")[:MAX_STR]


def topic_pattern(topic: str) -> str:
    """``telemetry/shop/dev-3`` → ``telemetry/shop/+``: a mesh pattern."""
    return _collapse(topic, "/", "+")[:MAX_STR]


def overlaps(pattern: str, topic: str) -> bool:
    """Whether the interest ``pattern`` matches some topic the topic pattern ``topic`` matches.

    ``topic`` has ``+`` for collapsed levels and no ``#``.
    """
    p, t = pattern.split("/"), topic.split("/")
    for i, lvl in enumerate(p):
        if lvl == "#":
            return True
        if i >= len(t):
            return False
        if lvl != "+" and t[i] != "+" and lvl != t[i]:
            return False
    return len(p) == len(t)


def example_of(env: Envelope) -> dict[str, Any]:
    """What the catalog shows of an event: context attributes and truncated, redacted data."""
    attrs: dict[str, Any] = {}
    for name, value in env.event.attrs.items():
        if len(name) > 64 or not example_attribute(name):
            continue
        if isinstance(value, str):
            value = mask_url_credentials(value)[:MAX_STR]
        attrs[name] = value
        if len(attrs) >= 2 * MAX_LIST:
            break
    out: dict[str, Any] = {"attributes": attrs}
    data = env.event.data
    if data is None:
        return out
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        text = bytes(data[:EXAMPLE_DATA]).decode("utf-8", errors="replace")
        if "\x00" not in text and "\ufffd" not in text[:-3]:
            out["data"] = text
        else:
            out["data"] = f"({len(data)} bytes of binary data)"
    else:
        dumped = orjson.dumps(_redact(parsed, 0)).decode()
        out["data"] = dumped[:EXAMPLE_DATA]
    out["truncated"] = len(data) > EXAMPLE_DATA or len(out["data"]) >= EXAMPLE_DATA
    return out


def _redact(value: Any, depth: int) -> Any:
    if depth > 16:
        return MASK
    if isinstance(value, dict):
        return {k: MASK if secret_like(k) else _redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, depth + 1) for v in value[:64]]
    return value


class _Entry:
    """What this node saw of one type."""

    __slots__ = (
        "bucket_at",
        "buckets",
        "count",
        "example",
        "example_at",
        "first_seen",
        "last_seen",
        "producers",
        "raw",
        "sources",
        "topics",
        "type",
    )

    def __init__(self, type_: str, now: float) -> None:
        self.type = type_
        self.count = 0
        self.first_seen = now
        self.last_seen = now
        self.sources: dict[str, None] = {}
        self.topics: dict[str, None] = {}
        self.producers: dict[str, None] = {}
        self.raw: set[tuple[Any, str, str]] = set()
        self.example: dict[str, Any] | None = None
        self.example_at = 0.0
        self.buckets = [0] * _BUCKETS
        self.bucket_at = int(now) // _BUCKET

    def add(self, n: int, now: float) -> None:
        self.count += n
        self.last_seen = now
        b = int(now) // _BUCKET
        if b != self.bucket_at:
            for k in range(self.bucket_at + 1, min(b, self.bucket_at + _BUCKETS) + 1):
                self.buckets[k % _BUCKETS] = 0
            if b - self.bucket_at > _BUCKETS:
                self.buckets = [0] * _BUCKETS
            self.bucket_at = b
        self.buckets[b % _BUCKETS] += n

    def rate(self, now: float) -> float:
        b = int(now) // _BUCKET
        low = max(b, self.bucket_at) - _BUCKETS + 1
        total = sum(self.buckets[k % _BUCKETS] for k in range(max(low, 0), self.bucket_at + 1))
        return round(total / (_BUCKET * _BUCKETS), 3)

    def see(self, source: Any, topic: str, origin: str) -> None:
        key = (source, topic, origin)
        if key in self.raw:
            return
        if len(self.raw) >= _RAW_SEEN:
            self.raw.clear()  # ids in sources or topics: patterns still collapse them
        self.raw.add(key)
        if isinstance(source, str) and len(self.sources) < MAX_LIST:
            self.sources.setdefault(source_pattern(source), None)
        if len(self.topics) < MAX_LIST:
            self.topics.setdefault(topic_pattern(topic), None)
        if len(self.producers) < MAX_LIST:
            self.producers.setdefault(origin, None)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "type": self.type,
            "sources": list(self.sources),
            "topics": list(self.topics),
            "producers": list(self.producers),
            "count": self.count,
            "rate": self.rate(now),
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "example": self.example,
        }


@dataclass(slots=True)
class Reported:
    """One entry a peer sent: what ``path[0]`` saw, passed on along ``path``."""

    type: str
    sources: list[str]
    topics: list[str]
    producers: list[str]
    count: int
    rate: float
    first_seen: float
    last_seen: float
    example: dict[str, Any] | None
    path: tuple[str, ...] = field(default=())

    @property
    def node(self) -> str:
        return self.path[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "sources": self.sources,
            "topics": self.topics,
            "producers": self.producers,
            "count": self.count,
            "rate": self.rate,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "example": self.example,
            "path": list(self.path),
        }


class Catalog:
    """Per type: what this node saw, and what each peer reported."""

    def __init__(self, node_id: str, max_types: int = MAX_TYPES) -> None:
        self.node_id = node_id
        self.max_types = max_types
        self._own: dict[str, _Entry] = {}
        self._learned: dict[str, list[Reported]] = {}  # by the peer that sent them
        self.dropped = 0  # events of types found no room (beyond max_types)
        self.version = 0  # bumped when the set of types or patterns changes

    # -- the hot path -------------------------------------------------------------------

    def record(self, envs: Sequence[Envelope]) -> int:
        """Count a routed batch; return how many events found no room for their type."""
        groups: dict[tuple[Any, Any, str, str], list[Any]] = {}
        for env in envs:
            a = env.event.attrs
            k = (a.get("type"), a.get("source"), env.topic, env.origin)
            g = groups.get(k)
            if g is None:
                groups[k] = [1, env]
            else:
                g[0] += 1
        if not groups:
            return 0
        now = time.time()
        own = self._own
        dropped = 0
        for (type_, source, topic, origin), (n, env) in groups.items():
            e = own.get(type_) if type(type_) is str else None
            if e is None:
                if type(type_) is not str or not type_:
                    continue
                if len(own) >= self.max_types:
                    dropped += n
                    continue
                e = own[type_] = _Entry(type_[:MAX_STR], now)
                self.version += 1
            e.add(n, now)
            if (source, topic, origin) not in e.raw:
                before = len(e.sources) + len(e.topics) + len(e.producers)
                e.see(source, topic, origin)
                if len(e.sources) + len(e.topics) + len(e.producers) != before:
                    self.version += 1
            if e.example is None or now - e.example_at > EXAMPLE_REFRESH:
                e.example = example_of(env)
                e.example_at = now
        self.dropped += dropped
        return dropped

    # -- sharing ------------------------------------------------------------------------

    def types(self) -> list[str]:
        """The CloudEvent types this node routed itself (not those peers reported)."""
        return sorted(self._own)

    def own(self) -> list[dict[str, Any]]:
        now = time.time()
        return [e.to_json(now) for e in self._own.values()]

    def share(self, peer: str, rules: TopicRules | None) -> list[dict[str, Any]]:
        """The entries of a catalog frame for ``peer``, within our export for it."""
        out: list[dict[str, Any]] = []
        me = (self.node_id,)
        for item in self.own():
            item["path"] = list(me)
            out.append(item)
        for reports in self._learned.values():
            for r in reports:
                if peer in r.path or len(r.path) >= MAX_LIST:
                    continue
                item = r.to_json()
                item["path"] = [*r.path, self.node_id]
                out.append(item)
        shared: list[dict[str, Any]] = []
        for item in out:
            if rules is not None and not rules.everything:
                attrs = (item.get("example") or {}).get("attributes") or {"type": item["type"]}
                topics = [t for t in item["topics"] if rules.allows(tuple(t.split("/")), attrs)]
                if not topics:
                    continue
                if len(topics) < len(item["topics"]):
                    # Some of the type's traffic is outside the export: its example and
                    # source patterns may come from there, so the peer gets neither.
                    item["example"] = None
                    item["sources"] = []
                item["topics"] = topics
            shared.append(item)
            if len(shared) >= MAX_ENTRIES:
                break
        return shared

    def learn(self, peer: str, reports: Iterable[Reported]) -> None:
        """What ``peer`` reports now replaces what it reported before."""
        self._learned[peer] = [r for r in reports if self.node_id not in r.path]
        self.version += 1

    def forget(self, peer: str) -> None:
        if self._learned.pop(peer, None) is not None:
            self.version += 1

    # -- reading ------------------------------------------------------------------------

    def view(
        self,
        routes: Sequence[RouteInfo],
        schemas: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Every type this node saw or heard of, merged, with its consuming nodes."""
        now = time.time()
        by_type: dict[str, dict[str, Any]] = {}
        latest: dict[tuple[str, str], Reported] = {}  # (reporter, type): its freshest report
        for reports in self._learned.values():
            for r in reports:
                k = (r.node, r.type)
                have = latest.get(k)
                if have is None or r.last_seen > have.last_seen:
                    latest[k] = r
        rows: list[tuple[str, dict[str, Any]]] = [
            (self.node_id, e.to_json(now)) for e in self._own.values()
        ]
        rows += [(r.node, r.to_json()) for r in latest.values()]
        for reporter, item in rows:
            m = by_type.get(item["type"])
            if m is None:
                m = by_type[item["type"]] = {
                    "type": item["type"],
                    "sources": [],
                    "topics": [],
                    "producers": [],
                    "consumers": [],
                    "schema": None,
                    "rate": 0.0,
                    "count": 0,
                    "first_seen": item["first_seen"],
                    "last_seen": item["last_seen"],
                    "example": item["example"],
                    "reported_by": [],
                }
            for key in ("sources", "topics", "producers"):
                for v in item[key]:
                    if v not in m[key] and len(m[key]) < MAX_LIST:
                        m[key].append(v)
            # Counts and rates overlap between nodes (an event crosses several): the
            # busiest reporter's figures are shown, not a sum.
            m["count"] = max(m["count"], item["count"])
            m["rate"] = max(m["rate"], item["rate"])
            m["first_seen"] = min(m["first_seen"], item["first_seen"])
            m["last_seen"] = max(m["last_seen"], item["last_seen"])
            if m["example"] is None:
                m["example"] = item["example"]
            if reporter not in m["reported_by"]:
                m["reported_by"].append(reporter)
        compiled = _compiled(routes)
        for m in by_type.values():
            attrs = (m["example"] or {}).get("attributes") or {"type": m["type"]}
            consumers: list[str] = []
            for origin, pattern, pred in compiled:
                if origin in consumers:
                    continue
                if not any(overlaps(pattern, t) for t in m["topics"]):
                    continue
                if pred is not None and not _accepts(pred, attrs):
                    continue
                consumers.append(origin)
            m["consumers"] = sorted(consumers)
            m["producers"].sort()
            m["reported_by"].sort()
            if schemas:
                m["schema"] = _schema_for(m["type"], schemas)
        return sorted(by_type.values(), key=lambda m: m["type"])


def _compiled(routes: Sequence[RouteInfo]) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for r in routes:
        pred = None
        if r.filter is not None:
            try:
                pred = compile_filter(r.filter)
            except FilterError:
                continue
        out.append((r.origin, r.pattern, pred))
    return out


def _accepts(pred: Any, attrs: Mapping[str, Any]) -> bool:
    try:
        return bool(pred(attrs))
    except Exception:  # a filter that cannot decide on the example: no claim either way
        return False


def _schema_for(type_: str, schemas: Mapping[str, Any]) -> Any:
    """The schema configured for ``type_``: an exact type, else the longest ``prefix*``."""
    if type_ in schemas:
        return schemas[type_]
    best: tuple[int, Any] | None = None
    for key, schema in schemas.items():
        fits = key.endswith("*") and type_.startswith(key[:-1])
        if fits and (best is None or len(key) > best[0]):
            best = (len(key), schema)
    return best[1] if best is not None else None
