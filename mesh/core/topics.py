"""Hierarchical topics and wildcard patterns, in MQTT, NATS and mesh syntax.

The mesh uses MQTT's model: levels separated by ``/``, ``+`` matches exactly
one level, ``#`` (last) matches the remaining levels, zero or more. NATS uses
tokens separated by ``.`` with ``*`` and ``>`` (``>`` needs at least one
token). HTTP ingress topics are URL paths and use the mesh syntax.

A compiled :class:`Pattern` matches a topic given as a tuple of levels and
returns the *captures*: one string per wildcard, in order. A ``#`` / ``>``
capture is the remaining levels joined with ``/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mesh.core.errors import MeshError

__all__ = [
    "Pattern",
    "Syntax",
    "TopicError",
    "mqtt_to_nats",
    "nats_to_mqtt",
    "split_topic",
    "to_mesh_pattern",
]

Syntax = Literal["mqtt", "nats", "mesh"]


class TopicError(MeshError):
    """A topic or pattern is malformed."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{topic!r}: {reason}")


def split_topic(topic: str, syntax: Syntax) -> tuple[str, ...]:
    """Split a concrete topic or subject into its levels."""
    return tuple(topic.split("." if syntax == "nats" else "/"))


def nats_to_mqtt(subject: str) -> str:
    """``a.*.b.>`` → ``a/+/b/#``."""
    levels = subject.split(".")
    out = []
    for i, tok in enumerate(levels):
        if tok == "*":
            out.append("+")
        elif tok == ">":
            if i != len(levels) - 1:
                raise TopicError(subject, "'>' must be the last token")
            out.append("#")
        else:
            if "/" in tok:
                raise TopicError(subject, f"token {tok!r} contains '/' (not portable to MQTT)")
            out.append(tok)
    return "/".join(out)


def mqtt_to_nats(pattern: str) -> str:
    """``a/+/b/#`` → ``a.*.b.>``."""
    levels = pattern.split("/")
    out = []
    for i, lvl in enumerate(levels):
        if lvl == "+":
            out.append("*")
        elif lvl == "#":
            if i != len(levels) - 1:
                raise TopicError(pattern, "'#' must be the last level")
            out.append(">")
        else:
            if "." in lvl or not lvl:
                raise TopicError(pattern, f"level {lvl!r} cannot be a NATS token")
            out.append(lvl)
    return ".".join(out)


def to_mesh_pattern(pattern: str, syntax: Syntax) -> str:
    """Translate a pattern written in a broker's syntax into mesh syntax."""
    return nats_to_mqtt(pattern) if syntax == "nats" else pattern


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
