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
interest back to the neighbour it came from. Between routes that are equally
good the one learned first wins: a newcomer with an equally short path does
not take a route over, even while the first one's link is down and after it
returns.

Per-peer rules narrow what is learned and advertised
(:mod:`mesh.core.rules`): an interest from a peer is installed only within
our ``export`` for it, and what we advertise to a peer only within our
``import`` for it. What each peer told us is kept as it was said (``raw``),
so changing the rules re-narrows without asking the peer again.

*Reach*: every node announces the nodes behind it as path vectors
(``reach_to``), its own id first, subscriptions or not, so a node can tell
whether an event's origin is one its sending peer may speak for
(:meth:`RoutingTable.behind`).

:meth:`RoutingTable.match` returns a :class:`Decision`: the local egress
indices to deliver to, and per next hop the set of destination nodes that hop
is responsible for (destination-set forwarding).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh.core.filters import Predicate, canonical, compile_filter
from mesh.core.topics import Pattern

if TYPE_CHECKING:
    from mesh.core.rules import TopicRules

__all__ = [
    "Decision",
    "Interest",
    "Refusal",
    "RouteInfo",
    "RoutingTable",
    "SubKey",
    "subscription_key",
]

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


@dataclass(frozen=True, slots=True)
class Refusal:
    """An interest from a peer that the table did not install, and why."""

    code: str  # path (contains this node), export (outside our export), limit
    detail: str
    interest: Interest


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
        self._raw: dict[str, dict[tuple[str, SubKey], Interest]] = {}  # as each peer said
        self._export: dict[str, TopicRules] = {}  # absent: everything
        self._import: dict[str, TopicRules] = {}
        self._reach: dict[str, dict[str, tuple[str, ...]]] = {}  # peer -> origin -> path
        self._behind: dict[str, frozenset[str]] = {}  # cache of behind(peer)
        self.max_per_peer = 20_000  # interests kept per peer (limits.max_interests_per_peer)
        # When each peer's interest was first learned: ties go to the earliest.
        self._seen: dict[tuple[str, tuple[str, SubKey]], int] = {}
        self._learn_order = 0
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

    def replace_learned(self, peer: str, interests: Iterable[Interest]) -> list[Refusal]:
        """A full table from ``peer`` (after the hello): replaces what it told us before.

        Returns the interests not installed, with the reason.
        """
        refused: list[Refusal] = []
        raw: dict[tuple[str, SubKey], Interest] = {}
        for i in interests:
            if self._admit(peer, i, len(raw), refused, new=(i.origin, i.key) not in raw):
                raw[(i.origin, i.key)] = i
        self._raw[peer] = raw
        self._behind.pop(peer, None)
        self._install(peer, refused)
        return refused

    def update_learned(
        self, peer: str, add: Iterable[Interest], remove: Iterable[tuple[str, SubKey]]
    ) -> list[Refusal]:
        raw = self._raw.setdefault(peer, {})
        refused: list[Refusal] = []
        removed = [k for k in remove if raw.pop(k, None) is not None]
        added: list[Interest] = []
        for i in add:
            k = (i.origin, i.key)
            if self._admit(peer, i, len(raw), refused, new=k not in raw):
                raw[k] = i
                added.append(i)
        self._behind.pop(peer, None)
        if peer in self._export:
            self._install(peer, refused)  # narrowed entries may be shared: recompute all
            return refused
        table = self._learned.setdefault(peer, {})
        changed: set[tuple[str, SubKey]] = set()
        for k in removed:
            if table.pop(k, None) is not None:
                changed.add(k)
        for i in added:
            table[(i.origin, i.key)] = i
            changed.add((i.origin, i.key))
        self._reselect(changed)
        return refused

    def _admit(
        self, peer: str, i: Interest, have: int, refused: list[Refusal], *, new: bool
    ) -> bool:
        if self.self_id in i.path or i.origin == self.self_id:
            self.looped += 1
            refused.append(Refusal("path", f"path {' > '.join(i.path)} contains this node", i))
            return False
        if new and have >= self.max_per_peer:
            refused.append(
                Refusal("limit", f"more than {self.max_per_peer} interests from {peer}", i)
            )
            return False
        return True

    def _install(self, peer: str, refused: list[Refusal]) -> None:
        """Install what ``peer`` told us, narrowed by our export for it; reselect the changes."""
        rules = self._export.get(peer)
        raw = self._raw.get(peer, {})
        new: dict[tuple[str, SubKey], Interest]
        if rules is None:
            new = dict(raw)
        else:
            new = {}
            for i in raw.values():
                parts = rules.narrow(i)
                if not parts:
                    refused.append(
                        Refusal(
                            "export",
                            f"{i.pattern} is outside our export for {peer} ({rules.describe()})",
                            i,
                        )
                    )
                for n in parts:
                    new[(n.origin, n.key)] = n
        old = self._learned.get(peer, {})
        self._learned[peer] = new
        self._reselect({k for k in set(old) | set(new) if old.get(k) != new.get(k)})

    def set_rules(self, peer: str, import_: TopicRules | None, export: TopicRules | None) -> None:
        """Our import and export rules for ``peer`` (None: everything); applied at once."""
        imp = None if import_ is None or import_.everything else import_
        exp = None if export is None or export.everything else export
        if self._import.get(peer) is not imp:
            if imp is None:
                self._import.pop(peer, None)
            else:
                self._import[peer] = imp
            self.version += 1
        if self._export.get(peer) is not exp:
            if exp is None:
                self._export.pop(peer, None)
            else:
                self._export[peer] = exp
            self._install(peer, [])

    def export_rules(self, peer: str) -> TopicRules | None:
        return self._export.get(peer)

    def import_rules(self, peer: str) -> TopicRules | None:
        return self._import.get(peer)

    def learned(self) -> dict[str, list[Interest]]:
        """Everything each peer told us, as it said it (for persisting across restarts)."""
        return {p: list(t.values()) for p, t in self._raw.items()}

    def forget_peer(self, peer: str) -> None:
        """Withdraw everything learned over ``peer`` (peer removed from config)."""
        old = self._learned.pop(peer, {})
        self._raw.pop(peer, None)
        self._up.pop(peer, None)
        self._export.pop(peer, None)
        self._import.pop(peer, None)
        if self._reach.pop(peer, None) is not None:
            self.version += 1
        self._behind.pop(peer, None)
        for k in old:
            self._seen.pop((peer, k), None)
        self._reselect(set(old))

    # -- reach: which nodes are behind which peer -------------------------------------

    def set_reach(self, peer: str, paths: Iterable[tuple[str, ...]]) -> list[str]:
        """The nodes ``peer`` announces behind it (paths origin first, ``peer`` last).

        Returns the reasons for paths not kept (one containing this node). A
        path that does not end with ``peer`` never gets here (the frame parser
        refuses it).
        """
        refused: list[str] = []
        reach: dict[str, tuple[str, ...]] = {}
        for path in paths:
            if self.self_id in path:
                refused.append(f"reach path {' > '.join(path)} contains this node")
                continue
            known = reach.get(path[0])
            if known is None or len(path) < len(known):
                reach[path[0]] = path
        if self._reach.get(peer) != reach:
            self._reach[peer] = reach
            self._behind.pop(peer, None)
            self.version += 1
        return refused

    def reach(self) -> dict[str, list[tuple[str, ...]]]:
        """What each peer announced behind it (for persisting across restarts)."""
        return {p: list(r.values()) for p, r in self._reach.items()}

    def reach_to(self, peer: str) -> list[tuple[str, ...]]:
        """The nodes this node announces to ``peer``: itself, and who is behind its other peers.

        A peer that announced no reach (an older protocol version) is still
        behind us itself, with the nodes on the paths of its interests.
        """
        best: dict[str, tuple[str, ...]] = {self.self_id: (self.self_id,)}
        for other in {*self._reach, *self._raw}:
            if other == peer:
                continue
            reach = self._reach.get(other)
            if reach is None:
                raw = self._raw.get(other, {}).values()
                paths: Iterable[tuple[str, ...]] = [(other,)] + [
                    i.path[n:] for i in raw for n in range(len(i.path))
                ]
            else:
                paths = reach.values()
            for path in paths:
                if peer in path or self.self_id in path:
                    continue
                known = best.get(path[0])
                if known is None or len(path) + 1 < len(known):
                    best[path[0]] = (*path, self.self_id)
        return sorted(best.values())

    def behind(self, peer: str) -> frozenset[str]:
        """The origins ``peer`` may send events for: itself and what it announced behind it."""
        known = self._behind.get(peer)
        if known is None:
            ids = {peer, *self._reach.get(peer, {})}
            for i in self._raw.get(peer, {}).values():
                ids.update(i.path)
            known = self._behind[peer] = frozenset(ids)
        return known

    def _keys_learned(self, peer: str) -> set[tuple[str, SubKey]]:
        return set(self._learned.get(peer, {}))

    def _routes_via(self, peer: str) -> list[tuple[str, SubKey]]:
        return [k for k, r in self._routes.items() if r.next_hop == peer]

    def _reselect(self, keys: set[tuple[str, SubKey]]) -> None:
        if not keys:
            return
        now = time.time()
        seen = self._seen
        for k in keys:
            old = self._routes.get(k)
            best: tuple[int, int, int, str] | None = None
            best_interest: Interest | None = None
            for peer, table in self._learned.items():
                i = table.get(k)
                if i is None:
                    seen.pop((peer, k), None)
                    continue
                if (first := seen.get((peer, k))) is None:
                    self._learn_order += 1
                    first = seen[(peer, k)] = self._learn_order
                reachable = i.up and self._up.get(peer, False)
                # On a tie the route learned first wins, even across an outage of its
                # link: a newcomer announcing an equally short path (honest or not)
                # does not take it over, nor keep it once the first one is back.
                rank = (0 if reachable else 1, len(i.path), first, peer)
                if best is None or rank < best:
                    best, best_interest = rank, i
            origin, key = k
            if best_interest is None or best is None:
                if old is not None:
                    del self._routes[k]
                    e = self._trie.by_key.get(key)
                    if e is not None:
                        e.remote.pop(origin, None)
                        self._trie.discard_if_empty(key)
                continue
            hop = best[3]
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
        rules = self._import.get(peer)
        if rules is None:
            return out
        # Narrowed by our import for the peer: a well-behaved peer never sends what
        # we would drop at the link.
        narrowed: dict[tuple[str, SubKey], Interest] = {}
        for i in out.values():
            for n in rules.narrow(i):
                narrowed[(n.origin, n.key)] = n
        return narrowed

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
