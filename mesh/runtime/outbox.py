"""Durable per-destination queues: one outbox per peer link and per local egress.

An :class:`Outbox` is a FIFO of encoded envelope records kept in the node's
:class:`~mesh.runtime.store.Store`. Its single consumer reads with a cursor, hands the
records on, and acknowledges them by sequence number once the next hop made
them durable (a peer's ack) or the local broker confirmed them; only then are
they deleted. :meth:`Outbox.rewind` puts every unacknowledged record back in
line (after a link drops, or a publish failed), so nothing is lost and order
is kept.

Each outbox is bounded by bytes and age (:class:`OutboxPolicy`); the byte
bound may be exceeded by one routing batch (an empty outbox takes any one
batch, so nothing can stall forever). When a new record does not fit, the
overflow policy decides: ``block`` refuses it (:class:`~mesh.core.errors.Backpressure`:
ingress stops acknowledging, HTTP answers 503), ``drop-oldest`` moves the oldest
records not yet handed to the consumer to the dead-letter queue, ``reject-new``
sends the new record there. Records older than ``max_age`` expire to the
dead-letter queue. Every such drop is counted.

Appends from one routing decision go through :meth:`Outboxes.put`, one group
commit for all the outboxes involved. A bounded tail cache in memory serves a
consumer that keeps up without reading the database back. The
:class:`Outbox` keeps no per-record state in memory except for records in
flight, so a backlog of millions costs disk, not memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mesh.core.envelope import Envelope, decode_record
from mesh.core.errors import Backpressure
from mesh.runtime.store import DedupKey, Store

__all__ = ["Outbox", "OutboxPolicy", "Outboxes", "Unit"]

_MAX_TIMES = 4096  # time marks of an outbox (one per second of appends at most)

Overflow = Literal["block", "drop-oldest", "reject-new"]


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    max_bytes: int = 1 << 30  # 0: unbounded
    max_age: float = 0.0  # seconds; 0: records never expire
    overflow: Overflow = "block"


class Outbox:
    """A durable FIFO for one destination with one reading consumer."""

    def __init__(
        self,
        store: Store,
        name: str,
        box: int,
        policy: OutboxPolicy | None = None,
        *,
        cache_bytes: int = 4 << 20,
    ) -> None:
        self.store = store
        self.name = name
        self.box = box
        self.policy = policy or OutboxPolicy()
        self.depth = 0  # entries stored, not yet acknowledged
        self.bytes = 0
        self._cursor = 0  # highest seq handed to the consumer
        self._inflight: dict[int, int] = {}  # seq -> size, handed out and not yet acked
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._decoded: dict[int, Envelope] = {}  # decoded form of cached records, if known
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self._uncached_upto = 0  # every seq <= this may exist only in the database
        self._last = 0  # highest seq appended
        self._changed = asyncio.Event()
        self._freed = asyncio.Event()
        # (highest seq, time) of what was appended, one entry per second at most, so
        # the age of the oldest record needs neither per-record state nor a query.
        self._times: deque[tuple[int, float]] = deque()

    async def _load(self) -> None:
        self.depth, self.bytes = await self.store.box_stats(self.box)
        self._uncached_upto = self.store.last_seq
        self._last = self._uncached_upto
        if self.depth:
            oldest = await self.store.box_oldest(self.box)
            self._times.append((self._last, oldest if oldest is not None else time.time()))
            self._changed.set()

    def oldest_age(self) -> float:
        """Seconds the oldest record still queued here has waited (0 when empty)."""
        if not self.depth:
            self._times.clear()
            return 0.0
        first = min(self._inflight) if self._inflight else self._cursor + 1
        times = self._times
        while len(times) > 1 and times[0][0] < first:
            times.popleft()
        return max(0.0, time.time() - times[0][1]) if times else 0.0

    # -- producer side -------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be appended. An empty outbox takes any one
        batch, so a batch larger than the bound cannot stall forever."""
        limit = self.policy.max_bytes
        return not limit or not self.bytes or self.bytes + size <= limit

    async def wait_for_space(self) -> None:
        """Wait until records leave the outbox (delivered, dead-lettered or expired)."""
        self._freed.clear()
        await self._freed.wait()

    async def make_room(self, size: int) -> int:
        """drop-oldest: dead-letter the oldest records not in flight to fit ``size`` bytes."""
        need = self.bytes + size - self.policy.max_bytes
        if need <= 0:
            return 0
        return await self._evict(need=need, reason="outbox full (drop-oldest)")

    async def expire(self) -> int:
        """Dead-letter records older than ``max_age`` that are not in flight."""
        if not self.policy.max_age or not self.depth:
            return 0
        return await self._evict(
            older_than=time.time() - self.policy.max_age, reason="expired in outbox"
        )

    async def _evict(self, *, need: int = 0, older_than: float = 0.0, reason: str) -> int:
        """Shielded: the bookkeeping must follow a committed eviction."""

        async def evict() -> int:
            moved = await self.store.evict(
                self.box,
                self.name,
                after=self._cursor,
                need=need,
                older_than=older_than,
                reason=reason,
            )
            self._removed(moved)
            return len(moved)

        return await asyncio.shield(evict())

    def _removed(self, moved: Sequence[tuple[int, int]]) -> None:
        for seq, size in moved:
            self.depth -= 1
            self.bytes -= size
            rec = self._cache.pop(seq, None)
            if rec is not None:
                self._cache_bytes -= len(rec)
            self._decoded.pop(seq, None)
        self._freed.set()

    def _appended(
        self,
        seqs: Sequence[int],
        records: Sequence[bytes],
        envelopes: Sequence[Envelope | None] | None = None,
    ) -> None:
        envs = envelopes or [None] * len(seqs)
        for seq, rec, env in zip(seqs, records, envs, strict=True):
            size = len(rec)
            self.depth += 1
            self.bytes += size
            self._cache[seq] = rec
            self._cache_bytes += size
            if env is not None:
                self._decoded[seq] = env
        self._last = max(self._last, seqs[-1])
        now = time.time()
        times = self._times
        if times and now - times[-1][1] < 1.0:
            times[-1] = (self._last, times[-1][1])
        else:
            times.append((self._last, now))
            if len(times) > _MAX_TIMES:
                # Nobody asked for the age for a long while: keep every other mark
                # (coarser, still an upper bound), so the marks stay bounded.
                self._times = deque(list(times)[::2])
        while self._cache_bytes > self._cache_limit and self._cache:
            seq, rec = self._cache.popitem(last=False)
            self._cache_bytes -= len(rec)
            self._decoded.pop(seq, None)
            self._uncached_upto = max(self._uncached_upto, seq)
        self._changed.set()

    # -- consumer side -------------------------------------------------------------------

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
                        self._inflight[seq] = len(rec)
                    return out
                self._cursor = max(self._cursor, self._last)
            self._changed.clear()
            if self._cursor < self._last:
                continue
            await self._changed.wait()

    @property
    def waiting(self) -> bool:
        """Whether records are waiting after the cursor (a read would not block)."""
        return self._cursor < self._last

    def envelope(self, seq: int, record: bytes) -> Envelope:
        """The decoded envelope of a record just read (no decoding if the producer's
        copy is still cached); raises LinkProtocolError for a malformed record."""
        env = self._decoded.get(seq)
        return env if env is not None else decode_record(record)

    def rewind(self) -> None:
        """Hand every unacknowledged record to the consumer again, in order."""
        if self._inflight:
            self._cursor = min(self._inflight) - 1
            self._inflight.clear()
            self._changed.set()

    def _done(self, seqs: Iterable[int]) -> list[int]:
        done = [s for s in seqs if s in self._inflight]
        for s in done:
            self.bytes -= self._inflight.pop(s)
            self.depth -= 1
            rec = self._cache.pop(s, None)
            if rec is not None:
                self._cache_bytes -= len(rec)
            self._decoded.pop(s, None)
        if done:
            self._freed.set()
        return done

    async def ack(self, seqs: Iterable[int]) -> None:
        """The records are delivered: delete them durably."""
        done = [s for s in seqs if s in self._inflight]
        if done:
            # Shielded: once the delete is queued, the bookkeeping must follow it.
            await asyncio.shield(self._delete(done))

    async def _delete(self, done: list[int]) -> None:
        await self.store.delete(done)
        self._done(done)

    async def dead_letter(self, seq: int, reason: str) -> None:
        """Move one in-flight record to the dead-letter queue (atomically)."""
        if seq in self._inflight:
            await asyncio.shield(self._move_to_dlq(seq, reason))

    async def _move_to_dlq(self, seq: int, reason: str) -> None:
        await self.store.move_to_dlq(seq, reason, self.name)
        self._done([seq])

    def redriven(self, size: int) -> None:
        """A record of ``size`` bytes was put back into this outbox: count it, show it."""
        self.depth += 1
        self.bytes += size
        self._uncached_upto = self.store.last_seq
        self._last = self.store.last_seq
        self._changed.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)


Unit = tuple[DedupKey | None, list[tuple[Outbox, bytes, "Envelope | None"]]]
"""One event's records, each with its decoded envelope when the producer has it;
skipped as a whole if its dedup key was seen before."""


class Outboxes:
    """All outboxes of a node, sharing one store and one group commit per put."""

    def __init__(self, store: Store, default: OutboxPolicy | None = None) -> None:
        self.store = store
        self.default = default or OutboxPolicy()
        self._boxes: dict[str, Outbox] = {}

    async def get(self, name: str, policy: OutboxPolicy | None = None) -> Outbox:
        ob = self._boxes.get(name)
        if ob is None:
            box = await self.store.box_id(name)
            ob = self._boxes.get(name)  # another task may have won the race
            if ob is None:
                ob = Outbox(self.store, name, box, policy or self.default)
                await ob._load()
                ob = self._boxes.setdefault(name, ob)
        if policy is not None:
            ob.policy = policy
        return ob

    def find(self, name: str) -> Outbox | None:
        return self._boxes.get(name)

    async def wait_for_room(self, full: Backpressure) -> None:
        """After ``full``, wait until its outbox frees space, at most its ``retry_after``."""
        box = self.find(full.outbox)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(full.retry_after):
                if box is not None:
                    await box.wait_for_space()
                else:
                    await asyncio.sleep(full.retry_after)

    async def rename(self, old: str, new: str) -> bool:
        """Give outbox ``old`` the name ``new``, with everything queued in it."""
        if not await self.store.rename_box(old, new):
            return False
        ob = self._boxes.pop(old, None)
        if ob is not None:
            ob.name = new
            ob.rewind()  # its consumer is gone; the next one starts at the first record
            self._boxes[new] = ob
        return True

    async def remove(self, name: str) -> None:
        """Delete an outbox and everything in it."""
        ob = await self.get(name)
        await self.store.delete_box(ob.box)
        del self._boxes[name]

    def all(self) -> list[Outbox]:
        return list(self._boxes.values())

    async def put(self, units: Sequence[Unit]) -> int:
        """Append records durably, in one commit; return how many units were duplicates.

        Shielded from cancellation: a commit that happened is always announced to
        its outboxes, or their readers would never see those records.
        """
        if not units:
            return 0
        return await asyncio.shield(self._put(units))

    async def _put(self, units: Sequence[Unit]) -> int:
        results = await self.store.append(
            [(key, [(ob.box, rec) for ob, rec, _env in items]) for key, items in units]
        )
        per: dict[Outbox, tuple[list[int], list[bytes], list[Envelope | None]]] = {}
        duplicates = 0
        for (_key, items), seqs in zip(units, results, strict=True):
            if seqs is None:
                duplicates += 1
                continue
            for (ob, rec, env), seq in zip(items, seqs, strict=True):
                s, r, e = per.setdefault(ob, ([], [], []))
                s.append(seq)
                r.append(rec)
                e.append(env)
        for ob, (s, r, e) in per.items():
            ob._appended(s, r, e)
        return duplicates
