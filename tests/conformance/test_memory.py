"""The conformance suite against the in-process broker (bridges.memory).

There is no process or client here: the broker's own state is the
independent view (``published``, ``inject``, the acked/unacked counters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from bridges import memory
from bridges.memory import SPEC
from mesh.plugins import Message, Subscribe
from tests.conformance.base import BridgeConformance, Facts
from tests.conformance.wire import Collected, Sending, Wire
from tests.helpers import unique


class MemoryWire(Wire):
    label = "memory"
    unacked_by_reconnect = False  # the counters say

    def __init__(self) -> None:
        self.name = unique("mem")
        self.broker = memory.broker(self.name)

    def config(self, identity: str, *, proxied: bool = False) -> dict[str, Any]:
        return {"kind": "memory", "name": self.name}

    def topic(self, tag: str, leaf: str) -> str:
        return f"{tag}/{leaf}"

    def subscription(self, tag: str) -> Subscribe:
        return Subscribe(f"{tag}/#")

    def bad_topics(self, tag: str) -> list[str]:
        return [f"{tag}/+/x", f"{tag}/#", ""]

    def _published(self, tag: str) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in self.broker.published if m.topic.startswith(tag)]

    async def inject(self, tag: str, payloads: Sequence[bytes], *, ordered: bool = True) -> Sending:
        for p in payloads:
            self.broker.inject(Message(self.topic(tag, "in"), p))
        return Sending()

    async def observe(self, tag: str) -> Collected:
        return Collected(lambda: self._published(tag))

    async def stored(self, tag: str) -> int | None:
        return len(self._published(tag))

    async def unacked(self, tag: str) -> int | None:
        return self.broker.unacked

    async def aclose(self) -> None:
        memory._brokers.pop(self.name, None)


class TestMemory(BridgeConformance):
    label = "memory"
    spec = SPEC
    config = {"kind": "memory"}
    facts = Facts(connects=False, killable=False, loops=False)
    why_not = {
        "loops": "the in-process broker records a publish (broker.published) and "
        "delivers only what a test injects",
        "redelivery": "the in-process broker keeps nothing for a reconnect",
        "connects": "the broker is in-process: there is no process to stop",
        "killable": "the broker is in-process: there is no process to kill",
    }

    @pytest.fixture
    async def wire(self) -> AsyncIterator[Wire]:
        yield MemoryWire()
