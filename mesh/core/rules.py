"""Per-peer import and export rules: which mesh topics a peer may send us or receive.

A rule set is a list of entries, each a mesh-topic pattern or a pattern with a
Subscriptions API filter (``{topic, filter}``), as written under ``import`` and
``export`` of ``peers[]`` and ``accept[]``. Pure: compiled once per
configuration, then asked on the hot path.

- :meth:`TopicRules.allows` says whether an event (its topic levels and
  attributes) is within the rules; the default ``["#"]`` is
  :attr:`TopicRules.everything` and costs nothing to ask.
- :meth:`TopicRules.narrow` cuts an interest down to the part of it inside the
  rules: ``out/#`` against ``out/public/#`` becomes ``out/public/#``; an
  interest outside them becomes nothing. Two patterns overlap in at most one
  pattern (:func:`intersect`), so an interest narrows to at most one interest
  per entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.core.errors import FilterError
from mesh.core.filters import Predicate, compile_filter
from mesh.core.routing import Interest
from mesh.core.topics import Pattern

__all__ = ["EVERYTHING", "TopicRule", "TopicRules", "intersect"]


def intersect(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...] | None:
    """The pattern matching exactly the topics both ``a`` and ``b`` match, or None.

    ``#`` matches the rest of a topic, zero levels included, so
    ``a/#`` and ``a`` overlap in ``a``.
    """
    out: list[str] = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#":
            return (*out, *b[i:])
        if y == "#":
            return (*out, *a[i:])
        if x is None or y is None:
            return None
        if x == "+":
            out.append(y)
        elif y == "+" or x == y:
            out.append(x)
        else:
            return None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TopicRule:
    pattern: Pattern
    filter: Any  # the filter's JSON form, or None
    predicate: Predicate | None

    @classmethod
    def compile(cls, entry: str | Mapping[str, Any]) -> TopicRule:
        """One entry: ``"a/#"`` or ``{"topic": "a/#", "filter": {...}}``; TopicError/FilterError."""
        if isinstance(entry, str):
            return cls(Pattern.compile(entry), None, None)
        spec = entry.get("filter")
        pred = compile_filter(spec) if spec is not None else None
        return cls(Pattern.compile(str(entry["topic"])), spec, pred)

    @property
    def unfiltered_everything(self) -> bool:
        return self.pattern.levels == ("#",) and self.predicate is None


class TopicRules:
    """A compiled import or export list."""

    __slots__ = ("entries", "everything")

    def __init__(self, entries: Iterable[TopicRule]) -> None:
        self.entries = tuple(entries)
        self.everything = any(e.unfiltered_everything for e in self.entries)

    @classmethod
    def compile(cls, entries: Iterable[str | Mapping[str, Any]] | None) -> TopicRules:
        if entries is None:
            return EVERYTHING
        return cls(TopicRule.compile(e) for e in entries)

    def allows(self, levels: tuple[str, ...], attrs: Mapping[str, Any]) -> bool:
        if self.everything:
            return True
        for e in self.entries:
            if e.pattern.match(levels) is not None and (e.predicate is None or e.predicate(attrs)):
                return True
        return False

    def narrow(self, interest: Interest) -> list[Interest]:
        """The parts of ``interest`` inside these rules (itself when wholly inside)."""
        if self.everything:
            return [interest]
        levels = Pattern.compile(interest.pattern)
        out: list[Interest] = []
        for e in self.entries:
            if e.predicate is None and e.pattern.covers(levels):
                return [interest]
        for e in self.entries:
            common = intersect(levels.levels, e.pattern.levels)
            if common is None:
                continue
            spec = _both(interest.filter, e.filter)
            if spec is not interest.filter and spec is not e.filter:
                try:
                    compile_filter(spec)  # both fit the limits; together they may not
                except FilterError:
                    continue
            narrowed = Interest(interest.origin, "/".join(common), spec, interest.path, interest.up)
            if narrowed not in out:
                out.append(narrowed)
        return out

    def describe(self) -> str:
        return ", ".join(e.pattern.text + (" (filtered)" if e.filter else "") for e in self.entries)


def _both(a: Any, b: Any) -> Any:
    """A filter passing what both ``a`` and ``b`` pass (either may be None: no filter)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    return {"all": [a, b]}


EVERYTHING = TopicRules([TopicRule(Pattern.compile("#"), None, None)])
