"""Durable per-destination queues: one outbox per peer link and per local egress.

An :class:`Outbox` is a FIFO of encoded envelope records kept in the node's
:class:`~mesh.store.Store`. Its single consumer reads with a cursor, hands the
records on, and acknowledges them by sequence number once the next hop made
them durable (a peer's ack) or the local broker confirmed them; only then are
they deleted. :meth:`Outbox.rewind` puts every unacknowledged record back in
line (after a link drops, or a publish failed), so nothing is lost and order
is kept.

Appends from one routing decision go through :meth:`Outboxes.put`, one group
commit for all the outboxes involved. A bounded tail cache in memory serves a
consumer that keeps up without reading the database back.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from mesh.store import Store

__all__ = ["Outbox", "Outboxes"]


class Outbox:
    """A durable FIFO for one destination with one reading consumer."""

    def __init__(self, store: Store, name: str, box: int, *, cache_bytes: int = 4 << 20) -> None:
        self.store = store
        self.name = name
        self.box = box
        self.depth = 0  # entries stored, not yet acknowledged
        self.bytes = 0
        self._cursor = 0  # highest seq handed to the consumer
        self._inflight: set[int] = set()
        self._sizes: dict[int, int] = {}
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._uncached_upto = 0  # every seq <= this may exist only in the database
        self._last = 0  # highest seq appended
        self._changed = asyncio.Event()

    async def _load(self) -> None:
        n, size, _low = await self.store.box_stats(self.box)
        self.depth, self.bytes = n, size
        self._uncached_upto = self.store.last_seq
        self._last = self._uncached_upto
        if n:
            self._changed.set()

    def _appended(self, seqs: Sequence[int], records: Sequence[bytes]) -> None:
        for seq, rec in zip(seqs, records, strict=True):
            size = len(rec)
            self.depth += 1
            self.bytes += size
            self._cache[seq] = rec
            self._cache_bytes += size
        self._last = seqs[-1]
        while self._cache_bytes > self._cache_limit and self._cache:
            seq, rec = self._cache.popitem(last=False)
            self._cache_bytes -= len(rec)
            self._uncached_upto = max(self._uncached_upto, seq)
        self._changed.set()

    async def read(self, limit: int) -> list[tuple[int, bytes]]:
        """Wait for records after the cursor; return up to ``limit`` of them."""
        while True:
            if self._cursor < self._last:
                if self._cursor >= self._uncached_upto:
                    out = []
                    for seq, rec in self._cache.items():
                        if seq > self._cursor:
                            out.append((seq, rec))
                            if len(out) >= limit:
                                break
                else:
                    out = await self.store.read(self.box, self._cursor, limit)
                if out:
                    self._cursor = out[-1][0]
                    for seq, rec in out:
                        self._inflight.add(seq)
                        self._sizes[seq] = len(rec)
                    return out
                self._cursor = max(self._cursor, self._last)
            self._changed.clear()
            if self._cursor < self._last:
                continue
            await self._changed.wait()

    def rewind(self) -> None:
        """Hand every unacknowledged record to the consumer again, in order."""
        if self._inflight:
            self._cursor = min(self._inflight) - 1
            self._inflight.clear()
            self._changed.set()

    async def ack(self, seqs: Iterable[int]) -> None:
        """The records are delivered: delete them durably."""
        done = [s for s in seqs if s in self._inflight]
        if not done:
            return
        await self.store.delete(done)
        for s in done:
            self._inflight.discard(s)
            self.bytes -= self._sizes.pop(s, 0)
            self.depth -= 1
            rec = self._cache.pop(s, None)
            if rec is not None:
                self._cache_bytes -= len(rec)

    @property
    def inflight(self) -> int:
        return len(self._inflight)


class Outboxes:
    """All outboxes of a node, sharing one store and one group commit per put."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._boxes: dict[str, Outbox] = {}

    async def get(self, name: str) -> Outbox:
        ob = self._boxes.get(name)
        if ob is None:
            box = await self.store.box_id(name)
            ob = self._boxes.get(name)  # another task may have won the race
            if ob is None:
                ob = Outbox(self.store, name, box)
                await ob._load()
                ob = self._boxes.setdefault(name, ob)
        return ob

    async def remove(self, name: str) -> None:
        """Delete an outbox and everything in it."""
        ob = await self.get(name)
        await self.store.delete_box(ob.box)
        del self._boxes[name]

    def all(self) -> list[Outbox]:
        return list(self._boxes.values())

    async def put(self, items: Sequence[tuple[Outbox, bytes]]) -> None:
        """Append records to their outboxes durably, in one commit."""
        if not items:
            return
        seqs = await self.store.append([(ob.box, rec) for ob, rec in items])
        per: dict[Outbox, tuple[list[int], list[bytes]]] = {}
        for (ob, rec), seq in zip(items, seqs, strict=True):
            s, r = per.setdefault(ob, ([], []))
            s.append(seq)
            r.append(rec)
        for ob, (s, r) in per.items():
            ob._appended(s, r)
