"""The embedded store: one SQLite database in WAL mode, off the event loop.

Every call is queued to one dedicated thread that owns the connection. The
thread takes *all* queued operations at once and runs them in a single
transaction with one commit: a group commit. If an operation fails, the group
is rolled back and each operation runs alone, so only the faulty one fails.
Concurrent ingress workers, link receivers and egress acknowledgements
therefore share commits.

One exception keeps latency low when the node is lightly loaded: a *small*
operation (a few events) that finds the thread idle, with nothing queued, is
committed on the event loop itself. Such a commit takes a fraction of a
millisecond with ``synchronous=NORMAL`` (no fsync), less than handing the work
to another thread and back, which on a busy machine costs two scheduler
wake-ups. Under load operations are larger or find the thread busy, and go
to the thread as before; with ``synchronous=FULL`` (an fsync per commit)
nothing runs on the loop.

WAL checkpoints run on a second thread with their own connection (PASSIVE:
they never block the writer), so no commit pays for copying the log into
the database file.

``synchronous`` is ``NORMAL`` by default: a committed transaction survives a
crash of the process (``kill -9``); an operating-system crash or power loss
may lose the last transactions. ``FULL`` (``storage.sync: full``) fsyncs
every group commit and survives both, at a cost in throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from mesh.core.errors import StoreError, StoreFull
from mesh.runtime.store.base import DeadLetter, DedupKey, EventRecords

__all__ = ["INLINE_MAX", "RESERVE_BYTES", "SqliteStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_F = TypeVar("_F", bound=Callable[..., Any])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, box INTEGER NOT NULL, ts REAL NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_box ON outbox (box, seq);
CREATE TABLE IF NOT EXISTS dedup (
    source TEXT NOT NULL, id TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_ts ON dedup (ts);
CREATE TABLE IF NOT EXISTS dlq (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, reason TEXT NOT NULL, place TEXT NOT NULL,
    kind TEXT NOT NULL, meta TEXT NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

INLINE_MAX = 16  # events (or ack ranges) small enough to commit on the event loop
INSERT_CHUNK = 32  # rows per INSERT statement (see _insert_rows)
DEDUP_CHUNK = 64  # keys per dedup lookup (see _seen_keys)
_DLQ_INSERT = "INSERT INTO dlq(ts, reason, place, kind, meta, record) VALUES (?,?,?,?,?,?)"
_DLQ_ENTRY_SIZE = "length(record) + length(meta) + length(reason) + length(place)"
_DLQ_SIZE = f"SELECT coalesce(sum({_DLQ_ENTRY_SIZE}), 0) FROM dlq"
_Op = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


RESERVE_BYTES = 4 << 20  # kept free for deletes and acks while the disk is full


class SqliteStore:
    """The SQLite store, with group commits on a dedicated thread.

    A full disk. When a commit fails with SQLITE_FULL the store is *full*: it
    deletes its reserve file (``<db>.reserve``, ``RESERVE_BYTES`` written at
    open, as databases keep a reserve) so that deletes, acknowledgements and
    checkpoints still have room, and refuses what would grow the database
    (appends, dead letters, saved routes) with :class:`StoreFull` — an
    Overloaded, which the runtime answers by not acknowledging — without
    touching the disk, until the file system has room for the reserve and
    more again. Then it writes the reserve back and accepts writes again.
    """

    def __init__(self, path: Path, *, sync: str = "normal") -> None:
        self.path = path
        self.sync = sync.upper()
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._next_seq = 1
        self.commits = 0
        # Serialises the connection between the store thread and inline commits.
        self._lock = threading.Lock()
        # Operations queued to the thread, and of those, the ones whose callers have
        # resumed: when equal, an inline commit cannot overtake anyone (both are
        # counted on the event loop).
        self._queued = 0
        self._finished = 0
        self.inline = self.sync in ("NORMAL", "OFF")
        self._db: sqlite3.Connection | None = None  # the store thread's, once open
        self._checkpoints: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self.reserve = path.with_name(path.name + ".reserve")
        self.full = False
        self.full_since = 0.0

    # -- a full disk ---------------------------------------------------------------------

    def _make_reserve(self) -> None:
        try:
            if self.reserve.exists() and self.reserve.stat().st_size >= RESERVE_BYTES:
                return
            with open(self.reserve, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.reserve.unlink()
            log.debug("no reserve file %s: %s", self.reserve, exc)

    def _became_full(self) -> None:
        if self.full:
            return
        self.full = True
        self.full_since = time.monotonic()
        with contextlib.suppress(OSError):
            self.reserve.unlink()
        log.warning(
            "store %s: the disk is full; not accepting new events until there is room "
            "(deletes and acknowledgements go on)",
            self.path,
        )

    def check_room(self) -> None:
        """Raise StoreFull while the disk is full; leave that state once it has room."""
        if not self.full:
            return
        if (self._room() or 0) < 3 * RESERVE_BYTES:
            raise StoreFull(str(self.path))
        self._make_reserve()
        self.full = False
        log.warning(
            "store %s: room on the disk again after %.0f s; accepting events",
            self.path,
            time.monotonic() - self.full_since,
        )

    def _room(self) -> int | None:
        """Bytes free for us on the store's file system; None if it cannot be told."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def probe_room(self) -> None:
        """Raise StoreFull if the disk is full, even if no commit has failed yet.

        Less room than the reserve file holds counts as full: the next appends
        would fail. Cheap (one statvfs), for the link canary, not per event.
        """
        self.check_room()
        room = self._room()
        if room is not None and room < RESERVE_BYTES:
            self._became_full()
            raise StoreFull(str(self.path))

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._make_reserve)
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
        self._stop_checkpoints.clear()
        self._checkpoints = threading.Thread(
            target=self._checkpointer, name="store-checkpoint", daemon=True
        )
        self._checkpoints.start()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._stop_checkpoints.set()
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.join)
            self._checkpoints = None
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- thread side -------------------------------------------------------------------

    def _init(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        row = db.execute("SELECT max(seq) FROM outbox").fetchone()
        self._next_seq = (row[0] or 0) + 1

    def _checkpointer(self, every: float = 0.1) -> None:
        """Copy the WAL into the database file in the background.

        A PASSIVE checkpoint never blocks the writer; its fsyncs happen here, not
        inside a commit. Once everything is copied, the writer restarts the WAL.
        Often and small: a checkpoint's fsyncs still slow the commits that
        append to the WAL meanwhile, and the longer the interval, the more each
        copies (S2 p99 at 5,000 events/s: 12.8 ms every 5 s, 7-8 ms every
        0.5 s, 4.4 ms every 0.1 s). Skipped when nothing was committed.
        """
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("store checkpointer cannot open %s: %s", self.path, exc)
            return
        try:
            copied = -1
            while not self._stop_checkpoints.wait(every):
                if self.commits == copied:
                    continue
                copied = self.commits
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    log.debug("checkpoint: %s", exc)
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def _run(self, init: _Op) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync}")
            # Checkpoints run on their own thread (_checkpointer): an automatic one
            # would copy and fsync megabytes inside some unlucky commit.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA journal_size_limit=67108864")
            init[0](db)
            self._db = db
        except Exception as exc:
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
            with self._lock:
                results = self._commit_group(db, [fn for fn, _loop, _fut in batch])
            _resolve_all(batch, results)
            if stop:
                break
        with self._lock:
            self._db = None
        db.close()

    def _commit_group(
        self, db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        try:
            return self._commit(db, fns)
        except Exception:
            # Something in the group failed: nothing of it was kept. Run each
            # operation in a transaction of its own, so only the faulty one fails.
            # Any exception, not only SQLite's, fails its own caller and never
            # this thread: a dead writer thread would leave every later caller
            # waiting for ever.
            results: list[tuple[Any, BaseException | None]] = []
            for fn in fns:
                try:
                    results.extend(self._commit(db, [fn]))
                except Exception as exc:
                    error = self._mapped(exc)
                    if isinstance(error, StoreFull) and not _grows(fn):
                        # The disk is full and the reserve was given up for this:
                        # a delete or an ack has room once more.
                        try:
                            results.extend(self._commit(db, [fn]))
                            continue
                        except Exception as again:
                            error = self._mapped(again)
                    results.append((None, error))
            return results

    def _mapped(self, exc: Exception) -> BaseException:
        """What the caller of a failed operation gets: StoreFull when the disk is full."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
            self._became_full()
            return StoreFull(str(self.path))
        return StoreError(f"{self.path}: {exc}")

    def _commit(
        self, db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run operations in one transaction; on any error roll it all back and raise.

        No savepoint per operation: every statement releases and re-takes the
        GIL, and under load each re-take can wait for the event loop's switch
        interval, so fewer statements per commit means a shorter commit.
        """
        next_seq = self._next_seq
        try:
            db.execute("BEGIN IMMEDIATE")
            results: list[tuple[Any, BaseException | None]] = [(fn(db), None) for fn in fns]
            db.execute("COMMIT")
        except Exception:
            self._next_seq = next_seq
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    @property
    def last_seq(self) -> int:
        """The highest sequence number handed out so far."""
        return self._next_seq - 1

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, small: bool = False) -> T:
        """Run ``fn(connection)`` inside the next group commit.

        ``small`` marks an operation cheap enough to commit on the event loop
        when the store thread is idle and nothing is queued (see the module
        docstring); anything else, or a small one that finds the thread busy,
        is queued to the thread. An inline commit waits until every queued
        operation has committed and its caller has resumed, so commits, and the
        callers' handling of their results, keep call order.
        """
        if self._thread is None:
            raise StoreError(f"{self.path}: store is not open")
        if (
            small
            and self.inline
            and self._queued == self._finished
            and self._lock.acquire(blocking=False)
        ):
            try:
                db = self._db
                if db is not None:
                    [(value, error)] = self._commit_group(db, [fn])
                    if error is not None:
                        raise error
                    return value  # type: ignore[no-any-return]
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queued += 1
        self._ops.put((fn, loop, fut))
        try:
            return await fut
        finally:
            self._finished += 1

    # -- outbox operations ---------------------------------------------------------------

    async def box_id(self, name: str) -> int:
        def op(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR IGNORE INTO boxes(name) VALUES (?)", (name,))
            return int(db.execute("SELECT id FROM boxes WHERE name=?", (name,)).fetchone()[0])

        return await self.call(op)

    async def append(self, units: Sequence[EventRecords]) -> list[list[int] | None]:
        """Store records durably, one unit per event; return the seqs, None for a duplicate.

        A unit with a dedup key is skipped entirely when (source, id) was seen
        before; otherwise the key is remembered in the same transaction, so a
        crash can never separate "delivered locally" from "remembered".
        Raises StoreFull while the disk is full.
        """
        self.check_room()

        @_growing
        def op(db: sqlite3.Connection) -> list[list[int] | None]:
            now = time.time()
            seen = _seen_keys(db, [key for key, _items in units if key is not None])
            fresh: list[tuple[str, str, float]] = []
            out: list[list[int] | None] = []
            rows: list[tuple[int, int, float, bytes]] = []
            seq = self._next_seq
            for key, items in units:
                if key is not None:
                    if key in seen:
                        out.append(None)
                        continue
                    seen.add(key)  # a second copy in the same batch is a duplicate too
                    fresh.append((key[0], key[1], now))
                seqs = list(range(seq, seq + len(items)))
                rows.extend((s, box, now, rec) for s, (box, rec) in zip(seqs, items, strict=True))
                seq += len(items)
                out.append(seqs)
            _insert_rows(db, "dedup(source, id, ts)", 3, fresh)
            _insert_rows(db, "outbox(seq, box, ts, record)", 4, rows)
            self._next_seq = seq
            return out

        return await self.call(op, small=len(units) <= INLINE_MAX)

    async def read(self, box: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        def op(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
            return db.execute(
                "SELECT seq, record FROM outbox WHERE box=? AND seq>? ORDER BY seq LIMIT ?",
                (box, after, limit),
            ).fetchall()

        return await self.call(op)

    async def delete(self, seqs: Sequence[int]) -> None:
        """Delete records; consecutive sequence numbers go as one range each."""
        ranges = _ranges(seqs)

        def op(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", ranges)

        await self.call(op, small=len(ranges) <= INLINE_MAX)

    async def delete_box(self, box: int) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM outbox WHERE box=?", (box,))

        await self.call(op)

    async def box_stats(self, box: int) -> tuple[int, int]:
        """(entries, bytes) of one box."""

        def op(db: sqlite3.Connection) -> tuple[int, int]:
            n, size = db.execute(
                "SELECT count(*), coalesce(sum(length(record)), 0) FROM outbox WHERE box=?",
                (box,),
            ).fetchone()
            return int(n), int(size)

        return await self.call(op)

    async def box_oldest(self, box: int) -> float | None:
        def op(db: sqlite3.Connection) -> float | None:
            (ts,) = db.execute("SELECT min(ts) FROM outbox WHERE box=?", (box,)).fetchone()
            return None if ts is None else float(ts)

        return await self.call(op)

    async def box_names(self) -> list[str]:
        def op(db: sqlite3.Connection) -> list[str]:
            return [str(n) for (n,) in db.execute("SELECT name FROM boxes ORDER BY id")]

        return await self.call(op)

    async def rename_box(self, old: str, new: str) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM boxes WHERE name=?", (new,)).fetchone():
                return False
            return db.execute("UPDATE boxes SET name=? WHERE name=?", (new, old)).rowcount == 1

        return await self.call(op)

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
        """Move a box's oldest records with seq > ``after`` to the dead-letter queue.

        Takes records until ``need`` bytes are freed, or every record older than
        ``older_than`` (a timestamp). Returns (seq, size) of what was moved.
        """

        def op(db: sqlite3.Connection) -> list[tuple[int, int]]:
            moved: list[tuple[int, int]] = []
            freed = 0
            cur = db.execute(
                "SELECT seq, ts, record FROM outbox WHERE box=? AND seq>? ORDER BY seq",
                (box, after),
            )
            now = time.time()
            dead = []
            for seq, ts, rec in cur:
                if need and freed >= need:
                    break
                if not need and ts >= older_than:
                    break
                moved.append((seq, len(rec)))
                freed += len(rec)
                dead.append((now, reason, place, "event", "{}", rec))
            cur.close()
            db.executemany(_DLQ_INSERT, dead)
            db.executemany(
                "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", _ranges([s for s, _ in moved])
            )
            return moved

        return await self.call(op)

    # -- dedup window ------------------------------------------------------------------

    async def prune_dedup(self, max_entries: int, max_age: float) -> int:
        """Forget (source, id) pairs beyond the window; return how many were dropped."""

        def op(db: sqlite3.Connection) -> int:
            n = 0
            if max_age > 0:
                n += db.execute("DELETE FROM dedup WHERE ts < ?", (time.time() - max_age,)).rowcount
            row = db.execute(
                "SELECT ts FROM dedup ORDER BY ts DESC LIMIT 1 OFFSET ?", (max_entries,)
            ).fetchone()
            if row is not None:
                n += db.execute("DELETE FROM dedup WHERE ts <= ?", (row[0],)).rowcount
            return n

        return await self.call(op)

    # -- dead letters ------------------------------------------------------------------

    async def dead_letter(self, entries: Sequence[DeadLetter]) -> list[int]:
        self.check_room()

        @_growing
        def op(db: sqlite3.Connection) -> list[int]:
            ids = []
            for e in entries:
                cur = db.execute(
                    _DLQ_INSERT,
                    (
                        e.ts or time.time(),
                        e.reason,
                        e.place,
                        e.kind,
                        orjson.dumps(e.meta).decode(),
                        e.record,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
            return ids

        return await self.call(op)

    async def dead_letters(
        self, *, limit: int = 100, after: int = 0, ids: Sequence[int] | None = None
    ) -> list[DeadLetter]:
        def op(db: sqlite3.Connection) -> list[DeadLetter]:
            if ids is not None:
                marks = ",".join("?" * len(ids)) or "NULL"
                rows = db.execute(
                    "SELECT id, ts, reason, place, kind, meta, record FROM dlq "
                    f"WHERE id IN ({marks}) ORDER BY id",
                    list(ids),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT id, ts, reason, place, kind, meta, record FROM dlq WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (after, limit),
                ).fetchall()
            return [
                DeadLetter(reason, place, kind, bytes(rec), orjson.loads(meta), ts, i)
                for i, ts, reason, place, kind, meta, rec in rows
            ]

        return await self.call(op)

    async def prune_dead_letters(self, max_bytes: int, max_age: float) -> tuple[int, int]:
        """Evict the oldest dead letters beyond the bounds; return (by age, by size).

        ``max_age`` in seconds and ``max_bytes`` (records and their
        descriptions) are each ignored when 0. The size is summed on every
        call: a few milliseconds for 100,000 entries, once per maintenance round.
        """

        def op(db: sqlite3.Connection) -> tuple[int, int]:
            by_age = by_size = 0
            if max_age > 0:
                by_age = db.execute(
                    "DELETE FROM dlq WHERE ts < ?", (time.time() - max_age,)
                ).rowcount
            if max_bytes > 0:
                total = db.execute(_DLQ_SIZE).fetchone()[0]
                if total > max_bytes:
                    excess = total - max_bytes
                    freed = 0
                    cutoff = 0
                    for entry_id, size in db.execute(
                        f"SELECT id, {_DLQ_ENTRY_SIZE} FROM dlq ORDER BY id"
                    ):
                        freed += size
                        cutoff = entry_id
                        if freed >= excess:
                            break
                    by_size = db.execute("DELETE FROM dlq WHERE id <= ?", (cutoff,)).rowcount
            return by_age, by_size

        return await self.call(op)

    async def dlq_count(self) -> int:
        def op(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM dlq").fetchone()[0])

        return await self.call(op)

    async def dlq_delete(self, ids: Sequence[int] | None = None) -> int:
        """Delete these entries (all of them when ``ids`` is None); return how many."""

        def op(db: sqlite3.Connection) -> int:
            if ids is None:
                return int(db.execute("DELETE FROM dlq").rowcount)
            return int(db.executemany("DELETE FROM dlq WHERE id=?", [(i,) for i in ids]).rowcount)

        return await self.call(op)

    async def move_to_dlq(self, seq: int, reason: str, place: str) -> None:
        """Move one outbox record to the dead-letter queue, atomically."""

        def op(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT record FROM outbox WHERE seq=?", (seq,)).fetchone()
            if row is None:
                return
            db.execute(
                _DLQ_INSERT,
                (time.time(), reason, place, "event", "{}", row[0]),
            )
            db.execute("DELETE FROM outbox WHERE seq=?", (seq,))

        await self.call(op)

    async def redrive(self, entry_id: int, box: int) -> int | None:
        """Move a dead-lettered event back into an outbox; return its new seq."""
        self.check_room()

        @_growing
        def op(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT record FROM dlq WHERE id=?", (entry_id,)).fetchone()
            if row is None:
                return None
            seq = self._next_seq
            db.execute(
                "INSERT INTO outbox(seq, box, ts, record) VALUES (?, ?, ?, ?)",
                (seq, box, time.time(), row[0]),
            )
            db.execute("DELETE FROM dlq WHERE id=?", (entry_id,))
            self._next_seq = seq + 1
            return seq

        return await self.call(op)

    # -- small values ------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        def op(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
            return bytes(row[0]) if row else None

        return await self.call(op)

    async def put(self, key: str, value: bytes) -> None:
        self.check_room()

        @_growing
        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

        await self.call(op)


def _insert_rows(
    db: sqlite3.Connection, table: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT many rows with few statements: ``executemany`` steps once per row,
    and each step gives up the GIL. Statements have a fixed size (``INSERT_CHUNK``
    rows, the rest one by one): the connection caches prepared statements with
    their last bound values, so a statement per batch size would keep megabytes
    of old records alive."""
    full = len(rows) - len(rows) % INSERT_CHUNK
    if full:
        marks = "(" + ",".join("?" * width) + ")"
        sql = f"INSERT INTO {table} VALUES {','.join([marks] * INSERT_CHUNK)}"
        for i in range(0, full, INSERT_CHUNK):
            db.execute(sql, [v for row in rows[i : i + INSERT_CHUNK] for v in row])
    if full < len(rows):
        db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * width)})", rows[full:])


_SEEN_SQL = (
    "SELECT d.source, d.id FROM (VALUES "
    + ",".join(["(?,?)"] * DEDUP_CHUNK)
    + ") AS v JOIN dedup AS d ON d.source = v.column1 AND d.id = v.column2"
)


def _seen_keys(db: sqlite3.Connection, keys: list[DedupKey]) -> set[DedupKey]:
    """Which of ``keys`` the dedup window holds, ``DEDUP_CHUNK`` keys per query.

    A join, not "(source, id) IN (VALUES ...)": SQLite scans the whole table for
    the latter (15 ms per 256 keys at 200k entries) but searches the primary key
    for the join (0.25 ms). One fixed statement (the last chunk padded with a
    repeated key), so the statement cache keeps one, not one per batch size.
    """
    seen: set[DedupKey] = set()
    for i in range(0, len(keys), DEDUP_CHUNK):
        chunk = keys[i : i + DEDUP_CHUNK]
        chunk += [chunk[-1]] * (DEDUP_CHUNK - len(chunk))
        rows = db.execute(_SEEN_SQL, [part for key in chunk for part in key])
        seen.update((str(a), str(b)) for a, b in rows)
    return seen


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _resolve_all(batch: list[_Op], results: list[tuple[Any, BaseException | None]]) -> None:
    """Hand a group commit's results to their loops: one wake-up per loop, not per op."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for (_fn, loop, fut), (value, error) in zip(batch, results, strict=True):
        by_loop.setdefault(loop, []).append((fut, value, error))

    for loop, items in by_loop.items():

        def done(items: list[tuple[asyncio.Future[Any], Any, Any]] = items) -> None:
            for fut, value, error in items:
                if fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(value)

        try:
            loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            log.debug("store results dropped: event loop closed")


def _resolve(op: _Op, value: Any, error: BaseException | None) -> None:
    _resolve_all([op], [(value, error)])


def _growing(fn: _F) -> _F:
    """Mark a store operation that grows the database (refused while the disk is full)."""
    setattr(fn, "_grows", True)  # noqa: B010
    return fn


def _grows(fn: Callable[..., Any]) -> bool:
    return getattr(fn, "_grows", False) is True
