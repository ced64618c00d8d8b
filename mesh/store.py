"""The node's durable store: one SQLite database in WAL mode, off the event loop.

Every call is queued to one dedicated thread that owns the connection. The
thread takes *all* queued operations at once and runs them in a single
transaction with one commit: a group commit. Concurrent ingress workers,
link receivers and egress acknowledgements therefore share commits, and the
event loop never blocks on SQLite.

``synchronous`` is ``NORMAL`` by default: a committed transaction survives a
crash of the process (``kill -9``); an operating-system crash or power loss
may lose the last transactions. ``FULL`` (``storage.sync: full``) fsyncs
every group commit and survives both, at a cost in throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mesh.errors import StoreError

__all__ = ["Store"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, box INTEGER NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_box ON outbox (box, seq);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_Op = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Store:
    """SQLite store with group commits on a dedicated thread."""

    def __init__(self, path: Path, *, sync: str = "normal") -> None:
        self.path = path
        self.sync = sync.upper()
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._next_seq = 1
        self.commits = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=((self._init, loop, ready),), name="store", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except StoreError:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- thread side -------------------------------------------------------------------

    def _init(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        row = db.execute("SELECT max(seq) FROM outbox").fetchone()
        self._next_seq = (row[0] or 0) + 1

    def _run(self, init: _Op) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync}")
            db.execute("PRAGMA wal_autocheckpoint=4000")
            init[0](db)
        except sqlite3.Error as exc:
            _resolve(init, None, StoreError(f"cannot open {self.path}: {exc}"))
            return
        _resolve(init, None, None)
        while True:
            first = self._ops.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while True:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            results: list[tuple[Any, BaseException | None]] = []
            try:
                db.execute("BEGIN IMMEDIATE")
                for fn, _loop, _fut in batch:
                    try:
                        results.append((fn(db), None))
                    except sqlite3.Error as exc:
                        results.append((None, StoreError(f"{self.path}: {exc}")))
                db.execute("COMMIT")
                self.commits += 1
            except sqlite3.Error as exc:
                err = StoreError(f"{self.path}: commit failed: {exc}")
                results = [(None, err)] * len(batch)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            for op, (value, error) in zip(batch, results, strict=True):
                _resolve(op, value, error)
            if stop:
                break
        db.close()

    @property
    def last_seq(self) -> int:
        """The highest sequence number handed out so far."""
        return self._next_seq - 1

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store thread inside the next group commit."""
        if self._thread is None:
            raise StoreError(f"{self.path}: store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._ops.put((fn, loop, fut))
        return await fut

    # -- outbox operations ---------------------------------------------------------------

    async def box_id(self, name: str) -> int:
        def op(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR IGNORE INTO boxes(name) VALUES (?)", (name,))
            return int(db.execute("SELECT id FROM boxes WHERE name=?", (name,)).fetchone()[0])

        return await self.call(op)

    async def append(self, items: Sequence[tuple[int, bytes]]) -> list[int]:
        """Store (box id, record) pairs durably; return their sequence numbers."""

        def op(db: sqlite3.Connection) -> list[int]:
            start = self._next_seq
            seqs = list(range(start, start + len(items)))
            db.executemany(
                "INSERT INTO outbox(seq, box, record) VALUES (?, ?, ?)",
                [(s, box, rec) for s, (box, rec) in zip(seqs, items, strict=True)],
            )
            self._next_seq = start + len(items)
            return seqs

        return await self.call(op)

    async def read(self, box: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        def op(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return db.execute(
                "SELECT seq, record FROM outbox WHERE box=? AND seq>? ORDER BY seq LIMIT ?",
                (box, after, limit),
            ).fetchall()

        return await self.call(op)

    async def delete(self, seqs: Sequence[int]) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])

        await self.call(op)

    async def delete_box(self, box: int) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM outbox WHERE box=?", (box,))

        await self.call(op)

    async def box_stats(self, box: int) -> tuple[int, int, int]:
        """(entries, bytes, lowest seq or 0) of one box."""

        def op(db: sqlite3.Connection) -> tuple[int, int, int]:
            n, size, low = db.execute(
                "SELECT count(*), coalesce(sum(length(record)), 0), coalesce(min(seq), 0) "
                "FROM outbox WHERE box=?",
                (box,),
            ).fetchone()
            return int(n), int(size), int(low)

        return await self.call(op)

    async def get(self, key: str) -> bytes | None:
        def op(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
            return bytes(row[0]) if row else None

        return await self.call(op)

    async def put(self, key: str, value: bytes) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

        await self.call(op)


def _resolve(op: _Op, value: Any, error: BaseException | None) -> None:
    _fn, loop, fut = op

    def done() -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # the loop is closed: nobody waits any more
        log.debug("store result dropped: event loop closed")
