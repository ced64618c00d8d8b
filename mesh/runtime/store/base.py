"""What the runtime needs from a store: the :class:`Store` protocol and its records.

The runtime (outboxes, router, ingress, links, the node and its admin API)
reaches durable state only through this protocol, so a second backend — a
replicated one on NATS JetStream, for a site of several nodes — implements
it without touching them. :class:`~mesh.runtime.store.sqlite.SqliteStore` is
the embedded default.

What every backend promises:

- **Atomic appends with dedup.** :meth:`Store.append` makes every unit of a
  call durable together with its dedup key, or none of them; a unit whose
  key was seen before is skipped. Sequence numbers grow with call order.
- **Acknowledge by deleting.** A record stays until :meth:`Store.delete`; a
  consumer that restarts reads it again (:meth:`Store.read` after a cursor).
- **Failures stay with their caller.** An operation that fails raises in its
  own caller only; every other operation, queued or later, goes on.
- **A full disk is backpressure.** Operations that grow the store raise
  :class:`~mesh.core.errors.StoreFull` (an ``Overloaded``) while it cannot
  commit, and :attr:`Store.full` says so; deletes and acknowledgements still
  work, so the node can drain what it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["DeadLetter", "DedupKey", "EventRecords", "Store"]

DedupKey = tuple[str, str]
"""(source, id) of an event, remembered to drop a second copy."""

EventRecords = tuple[DedupKey | None, Sequence[tuple[int, bytes]]]
"""One event's records, ``(box, record)`` each, with the key it is deduplicated by."""


@dataclass(slots=True)
class DeadLetter:
    """A dead-letter entry: what failed, why, where and when.

    ``kind`` is ``event`` for an envelope record (redrivable into ``place``,
    an outbox) or ``message`` for input that never became an event (an
    invalid message at ingress; ``meta`` describes it, ``record`` is its
    payload).
    """

    reason: str
    place: str
    kind: str
    record: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    id: int = 0


class Store(Protocol):
    """Durable state of one node: outboxes, the dedup window, dead letters, saved values."""

    @property
    def full(self) -> bool:
        """True while the store cannot commit what would grow it (a full disk)."""
        ...

    @property
    def last_seq(self) -> int:
        """The highest sequence number handed out so far."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- outboxes: put / take / ack ------------------------------------------------------

    async def box_id(self, name: str) -> int:
        """The id of the outbox called ``name``, created when new."""
        ...

    async def append(self, units: Sequence[EventRecords]) -> list[list[int] | None]:
        """Store each unit's records durably; its seqs, or None for a duplicate."""
        ...

    async def read(self, box: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (seq, record) of ``box`` after seq ``after``, in order."""
        ...

    async def delete(self, seqs: Sequence[int]) -> None:
        """Acknowledge: forget these records."""
        ...

    async def delete_box(self, box: int) -> None: ...

    async def box_stats(self, box: int) -> tuple[int, int]:
        """(records, bytes) in ``box``."""
        ...

    def probe_room(self) -> None:
        """Raise :class:`~mesh.core.errors.StoreFull` while the store could not grow."""
        ...

    async def box_oldest(self, box: int) -> float | None:
        """When the oldest record in ``box`` was stored (epoch seconds); None if empty."""
        ...

    async def box_names(self) -> list[str]:
        """The names of every outbox the store holds."""
        ...

    async def rename_box(self, old: str, new: str) -> bool:
        """Give outbox ``old`` (and what it holds) the name ``new``; False if ``old``
        does not exist or ``new`` already does."""
        ...

    async def evict(
        self,
        box: int,
        place: str,
        *,
        after: int,
        need: int = 0,
        older_than: float = 0.0,
        reason: str,
    ) -> list[tuple[int, int]]:
        """Move the oldest records after ``after`` to the dead letters; (seq, size) of each.

        Until ``need`` bytes are freed, or (``need`` 0) every record older than
        the timestamp ``older_than``.
        """
        ...

    async def move_to_dlq(self, seq: int, reason: str, place: str) -> None:
        """Move one record to the dead letters, atomically."""
        ...

    # -- the dedup window ----------------------------------------------------------------

    async def prune_dedup(self, max_entries: int, max_age: float) -> int: ...

    # -- dead letters --------------------------------------------------------------------

    async def dead_letter(self, entries: Sequence[DeadLetter]) -> list[int]: ...

    async def dead_letters(
        self, *, limit: int = 100, after: int = 0, ids: Sequence[int] | None = None
    ) -> list[DeadLetter]: ...

    async def dlq_count(self) -> int: ...

    async def dlq_delete(self, ids: Sequence[int] | None = None) -> int: ...

    async def redrive(self, entry_id: int, box: int) -> int | None:
        """Move a dead-lettered event back into ``box``; its new seq, None if gone."""
        ...

    async def prune_dead_letters(self, max_bytes: int, max_age: float) -> tuple[int, int]:
        """Evict the oldest dead letters beyond the bounds (0: none); (by age, by size)."""
        ...

    # -- small values (learned routes) ---------------------------------------------------

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...
