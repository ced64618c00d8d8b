"""The routing table: which local egress and which next hops want an event.

Pure and synchronous. Subscriptions are indexed in a topic trie keyed by mesh
pattern levels (``+`` and ``#`` have their own branches), so matching costs
the depth of the topic, not the number of subscriptions. Subscriptions with
the same pattern and filter share one trie entry and one filter evaluation.

Interests are subscriptions as advertised between nodes. Each carries its
origin node and the *path* it travelled (origin first, the neighbour it came
from last). For every (origin, subscription) the table keeps the shortest
path learned over any link that is up, falling back to a link that is down
(so events queue in that link's durable outbox rather than being lost).
A node ignores interests whose path contains itself, and never advertises an
interest back to the neighbour it came from.

:meth:`RoutingTable.match` returns a :class:`Decision`: the local egress
indices to deliver to, and per next hop the set of destination nodes that hop
is responsible for (destination-set forwarding).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.core.filters import Predicate, canonical, compile_filter
from mesh.core.topics import Pattern

__all__ = ["Decision", "Interest", "RouteInfo", "RoutingTable", "SubKey", "subscription_key"]

SubKey = tuple[str, str]  # (pattern, canonical filter)


def subscription_key(pattern: str, filter_spec: Any) -> SubKey:
    return (pattern, "" if filter_spec is None else canonical(filter_spec))


@dataclass(frozen=True, slots=True)
class Interest:
    """A subscription as advertised between nodes.

    ``up`` is false when the advertiser can reach the origin only over a link
    that is down: the route still works (events queue durably until the link
    returns) but any path that is up is preferred.
    """

    origin: str
    pattern: str
    filter: Any
    path: tuple[str, ...]
    up: bool = True

    @property
    def key(self) -> SubKey:
        return subscription_key(self.pattern, self.filter)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "pattern": self.pattern,
            "filter": self.filter,
            "path": list(self.path),
            "up": self.up,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Interest:
        return cls(
            str(obj["origin"]),
            str(obj["pattern"]),
            obj.get("filter"),
            tuple(str(p) for p in obj["path"]),
            bool(obj.get("up", True)),
        )


@dataclass(slots=True)
class Decision:
    local: list[int] = field(default_factory=list)
    remote: dict[str, set[str]] = field(default_factory=dict)  # next hop -> destinations

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


@dataclass(slots=True)
class RouteInfo:
    """One selected route, for introspection."""

    origin: str
    pattern: str
    filter: Any
    next_hop: str | None
    path: tuple[str, ...]
    since: float
    reachable: bool  # over links that are up all the way


class _Entry:
    __slots__ = ("local", "pattern", "predicate", "remote")

    def __init__(self, pattern: Pattern, predicate: Predicate | None) -> None:
        self.pattern = pattern
        self.predicate = predicate
        self.local: set[int] = set()
        self.remote: dict[str, str] = {}  # origin -> next hop

    def empty(self) -> bool:
        return not self.local and not self.remote


class _Node:
    __slots__ = ("children", "entries", "hash", "plus")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.plus: _Node | None = None
        self.hash: dict[SubKey, _Entry] = {}
        self.entries: dict[SubKey, _Entry] = {}


class _Trie:
    def __init__(self) -> None:
        self.root = _Node()
        self.by_key: dict[SubKey, _Entry] = {}

    def entry(self, key: SubKey, filter_spec: Any) -> _Entry:
        e = self.by_key.get(key)
        if e is None:
            pattern = Pattern.compile(key[0])
            pred = compile_filter(filter_spec) if filter_spec is not None else None
            e = _Entry(pattern, pred)
            self.by_key[key] = e
            node = self.root
            levels = pattern.levels
            for i, lvl in enumerate(levels):
                if lvl == "#":
                    node.hash[key] = e
                    break
                if lvl == "+":
                    if node.plus is None:
                        node.plus = _Node()
                    node = node.plus
                else:
                    node = node.children.setdefault(lvl, _Node())
                if i == len(levels) - 1:
                    node.entries[key] = e
        return e

    def discard_if_empty(self, key: SubKey) -> None:
        e = self.by_key.get(key)
        if e is None or not e.empty():
            return
        del self.by_key[key]
        node = self.root
        for lvl in e.pattern.levels:
            if lvl == "#":
                node.hash.pop(key, None)
                return
            nxt = node.plus if lvl == "+" else node.children.get(lvl)
            if nxt is None:
                return
            node = nxt
        node.entries.pop(key, None)

    def collect(self, levels: tuple[str, ...]) -> list[_Entry]:
        """Entries whose pattern matches ``levels``: one breadth-first pass per level."""
        out: list[_Entry] = []
        frontier = [self.root]
        for lvl in levels:
            nxt = []
            for node in frontier:
                if node.hash:
                    out.extend(node.hash.values())
                child = node.children.get(lvl)
                if child is not None:
                    nxt.append(child)
                if node.plus is not None:
                    nxt.append(node.plus)
            if not nxt:
                return out
            frontier = nxt
        for node in frontier:
            if node.hash:  # '#' also matches zero remaining levels
                out.extend(node.hash.values())
            if node.entries:
                out.extend(node.entries.values())
        return out


@dataclass(slots=True)
class _Route:
    interest: Interest
    next_hop: str
    since: float


class RoutingTable:
    """Local subscriptions and interests learned from peers, indexed for matching."""

    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        self._trie = _Trie()
        self._local: dict[int, tuple[SubKey, Any]] = {}  # egress index -> key, filter
        self._learned: dict[str, dict[tuple[str, SubKey], Interest]] = {}  # peer -> interests
        self._up: dict[str, bool] = {}
        self._routes: dict[tuple[str, SubKey], _Route] = {}
        self.version = 0  # bumped on every change that may alter advertisements
        self.looped = 0  # interests received whose path already contained this node

    # -- local subscriptions -------------------------------------------------------

    def set_local(self, subs: Mapping[int, tuple[str, Any]]) -> None:
        """Replace the local subscriptions: egress index -> (pattern, filter)."""
        for idx, (key, _f) in self._local.items():
            e = self._trie.by_key.get(key)
            if e is not None:
                e.local.discard(idx)
                self._trie.discard_if_empty(key)
        self._local = {}
        for idx, (pattern, spec) in subs.items():
            key = subscription_key(pattern, spec)
            self._trie.entry(key, spec).local.add(idx)
            self._local[idx] = (key, spec)
        self.version += 1

    def local_interests(self) -> list[Interest]:
        seen: dict[SubKey, Interest] = {}
        for key, spec in self._local.values():
            seen.setdefault(key, Interest(self.self_id, key[0], spec, (self.self_id,)))
        return list(seen.values())

    # -- learned interests ---------------------------------------------------------

    def link_state(self, peer: str, up: bool) -> None:
        """Record that the link to ``peer`` is up or down; routes re-selected."""
        if self._up.get(peer) == up:
            return
        self._up[peer] = up
        self._reselect({k for k in self._routes_via(peer)} | self._keys_learned(peer))

    def replace_learned(self, peer: str, interests: Iterable[Interest]) -> None:
        """A full table from ``peer`` (after the hello): replaces what it told us before."""
        old = self._learned.get(peer, {})
        new = {(i.origin, i.key): i for i in interests if self._acceptable(i)}
        self._learned[peer] = new
        self._reselect(set(old) | set(new))

    def update_learned(
        self, peer: str, add: Iterable[Interest], remove: Iterable[tuple[str, SubKey]]
    ) -> None:
        table = self._learned.setdefault(peer, {})
        changed: set[tuple[str, SubKey]] = set()
        for k in remove:
            if table.pop(k, None) is not None:
                changed.add(k)
        for i in add:
            if self._acceptable(i):
                table[(i.origin, i.key)] = i
                changed.add((i.origin, i.key))
        self._reselect(changed)

    def learned(self) -> dict[str, list[Interest]]:
        """Everything each peer told us (for persisting across restarts)."""
        return {p: list(t.values()) for p, t in self._learned.items()}

    def forget_peer(self, peer: str) -> None:
        """Withdraw everything learned over ``peer`` (peer removed from config)."""
        old = self._learned.pop(peer, {})
        self._up.pop(peer, None)
        self._reselect(set(old))

    def _acceptable(self, i: Interest) -> bool:
        if self.self_id in i.path or i.origin == self.self_id:
            self.looped += 1
            return False
        return True

    def _keys_learned(self, peer: str) -> set[tuple[str, SubKey]]:
        return set(self._learned.get(peer, {}))

    def _routes_via(self, peer: str) -> list[tuple[str, SubKey]]:
        return [k for k, r in self._routes.items() if r.next_hop == peer]

    def _reselect(self, keys: set[tuple[str, SubKey]]) -> None:
        if not keys:
            return
        now = time.time()
        for k in keys:
            best: tuple[int, int, str] | None = None
            best_interest: Interest | None = None
            for peer, table in self._learned.items():
                i = table.get(k)
                if i is None:
                    continue
                reachable = i.up and self._up.get(peer, False)
                rank = (0 if reachable else 1, len(i.path), peer)
                if best is None or rank < best:
                    best, best_interest = rank, i
            old = self._routes.get(k)
            origin, key = k
            if best_interest is None or best is None:
                if old is not None:
                    del self._routes[k]
                    e = self._trie.by_key.get(key)
                    if e is not None:
                        e.remote.pop(origin, None)
                        self._trie.discard_if_empty(key)
                continue
            hop = best[2]
            if old is not None and old.next_hop == hop and old.interest == best_interest:
                continue
            self._routes[k] = _Route(best_interest, hop, old.since if old else now)
            self._trie.entry(key, best_interest.filter).remote[origin] = hop
        self.version += 1

    # -- advertisement -------------------------------------------------------------

    def _reachable(self, r: _Route) -> bool:
        return r.interest.up and self._up.get(r.next_hop, False)

    def advertised_to(self, peer: str) -> dict[tuple[str, SubKey], Interest]:
        """What this node tells ``peer``: its own subscriptions and routes not via ``peer``.

        A route over a link that is down is advertised with ``up=False``, so
        the peer prefers any path that is up but can still queue through us.
        """
        out: dict[tuple[str, SubKey], Interest] = {}
        for i in self.local_interests():
            out[(i.origin, i.key)] = i
        for k, r in self._routes.items():
            if r.next_hop == peer or peer in r.interest.path:
                continue
            i = r.interest
            out[k] = Interest(
                i.origin, i.pattern, i.filter, (*i.path, self.self_id), self._reachable(r)
            )
        return out

    # -- matching ------------------------------------------------------------------

    def match(
        self,
        topic: tuple[str, ...],
        attrs: Mapping[str, Any],
        only: frozenset[str] | None = None,
    ) -> Decision:
        """Where an event on ``topic`` goes.

        ``only`` restricts remote destinations (and local delivery) to the
        destination set an upstream hop made this node responsible for.
        """
        local: list[int] = []
        remote: dict[str, set[str]] = {}
        if only is None:
            for e in self._trie.collect(topic):
                if e.predicate is not None and not e.predicate(attrs):
                    continue
                if e.local:
                    local.extend(e.local)
                for origin, hop in e.remote.items():
                    dests = remote.get(hop)
                    if dests is None:
                        remote[hop] = {origin}
                    else:
                        dests.add(origin)
        else:
            local_ok = self.self_id in only
            for e in self._trie.collect(topic):
                if not (local_ok and e.local) and not any(o in only for o in e.remote):
                    continue
                if e.predicate is not None and not e.predicate(attrs):
                    continue
                if local_ok and e.local:
                    local.extend(e.local)
                for origin, hop in e.remote.items():
                    if origin in only:
                        remote.setdefault(hop, set()).add(origin)
        if len(local) > 1:
            local = sorted(set(local))
        return Decision(local, remote)

    # -- introspection -------------------------------------------------------------

    def routes(self) -> list[RouteInfo]:
        out = [
            RouteInfo(self.self_id, key[0], spec, None, (self.self_id,), 0.0, True)
            for key, spec in self._local.values()
        ]
        for r in self._routes.values():
            i = r.interest
            out.append(
                RouteInfo(
                    i.origin,
                    i.pattern,
                    i.filter,
                    r.next_hop,
                    i.path,
                    r.since,
                    self._reachable(r),
                )
            )
        return out

    def destinations(self) -> set[str]:
        return {origin for origin, _ in self._routes}
