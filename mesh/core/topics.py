"""Hierarchical topics and wildcard patterns, in each protocol's syntax and the mesh's.

The mesh uses MQTT's model: levels separated by ``/``, ``+`` matches exactly
one level, ``#`` (last) matches the remaining levels, zero or more. Other
protocols spell the same thing differently (NATS: tokens separated by ``.``
with ``*`` and ``>``); a :class:`TopicSyntax` describes a spelling, and each
bridge declares its protocol's. HTTP ingress topics are URL paths in mesh
syntax.

A compiled :class:`Pattern` matches a topic given as a tuple of levels and
returns the *captures*: one string per wildcard, in order. A ``#`` capture is
the remaining levels joined with ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.core.errors import MeshError

__all__ = ["MESH_SYNTAX", "Pattern", "TopicError", "TopicSyntax"]


class TopicError(MeshError):
    """A topic or pattern is malformed."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{topic!r}: {reason}")


@dataclass(frozen=True, slots=True)
class TopicSyntax:
    """How a protocol writes topics and wildcard patterns.

    ``separator`` splits levels; ``one`` matches one level, ``rest`` (last)
    the remaining levels; ``reserved`` are tokens a pattern may not use
    because readers would take them for another protocol's wildcards.
    """

    name: str
    separator: str = "/"
    one: str = "+"
    rest: str = "#"
    reserved: frozenset[str] = frozenset()

    def split(self, topic: str) -> tuple[str, ...]:
        """A concrete topic or subject as its levels."""
        return tuple(topic.split(self.separator))

    def mesh_topic(self, topic: str) -> str:
        """A concrete topic or subject as a mesh topic (levels joined by ``/``)."""
        return topic if self.separator == "/" else "/".join(topic.split(self.separator))

    def to_mesh(self, pattern: str) -> str:
        """This syntax's pattern in mesh syntax (``a.*.b.>`` → ``a/+/b/#`` for NATS)."""
        levels = pattern.split(self.separator)
        out = []
        for i, tok in enumerate(levels):
            if tok in self.reserved:
                raise TopicError(
                    pattern, f"{self.name} patterns use {self.one} and {self.rest}, not {tok}"
                )
            if tok == self.one:
                out.append("+")
            elif tok == self.rest:
                if i != len(levels) - 1:
                    raise TopicError(pattern, f"{self.rest!r} must be the last level")
                out.append("#")
            else:
                if self.separator != "/" and "/" in tok:
                    raise TopicError(pattern, f"level {tok!r} contains '/' (not a mesh level)")
                out.append(tok)
        return "/".join(out)

    def from_mesh(self, pattern: str) -> str:
        """A mesh-syntax pattern in this syntax (``a/+/b/#`` → ``a.*.b.>`` for NATS)."""
        levels = pattern.split("/")
        out = []
        for i, lvl in enumerate(levels):
            if lvl == "+":
                out.append(self.one)
            elif lvl == "#":
                if i != len(levels) - 1:
                    raise TopicError(pattern, "'#' must be the last level")
                out.append(self.rest)
            else:
                if not lvl or (self.separator != "/" and self.separator in lvl):
                    raise TopicError(pattern, f"level {lvl!r} cannot be a {self.name} level")
                out.append(lvl)
        return self.separator.join(out)


MESH_SYNTAX = TopicSyntax("mesh")
"""Mesh topics: levels separated by ``/``, ``+`` one level, ``#`` the rest."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled mesh-syntax pattern (``+`` one level, ``#`` the rest)."""

    text: str
    levels: tuple[str, ...]
    wildcards: int

    @classmethod
    def compile(cls, text: str) -> Pattern:
        if not text:
            raise TopicError(text, "empty pattern")
        levels = tuple(text.split("/"))
        wildcards = 0
        for i, lvl in enumerate(levels):
            if lvl in ("+", "#"):
                wildcards += 1
                if lvl == "#" and i != len(levels) - 1:
                    raise TopicError(text, "'#' must be the last level")
            elif "+" in lvl or "#" in lvl:
                raise TopicError(text, f"wildcard must fill a whole level, not {lvl!r}")
        return cls(text, levels, wildcards)

    @property
    def is_literal(self) -> bool:
        return self.wildcards == 0

    def match(self, topic: tuple[str, ...]) -> tuple[str, ...] | None:
        """Captures if ``topic`` matches, else None."""
        pat = self.levels
        caps: list[str] = []
        n = len(topic)
        for i, lvl in enumerate(pat):
            if lvl == "#":
                caps.append("/".join(topic[i:]))
                return tuple(caps)
            if i >= n:
                return None
            if lvl == "+":
                caps.append(topic[i])
            elif lvl != topic[i]:
                return None
        return tuple(caps) if n == len(pat) else None

    def covers(self, other: Pattern) -> bool:
        """True when every topic ``other`` matches is also matched by this pattern."""
        for i, lvl in enumerate(self.levels):
            if lvl == "#":
                return True
            if i >= len(other.levels):
                return False
            o = other.levels[i]
            if o == "#":
                return False
            if lvl != "+" and (o == "+" or o != lvl):
                return False
        return len(self.levels) == len(other.levels)
