"""The store: group commits on its thread, small commits on the event loop when idle."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.core.errors import StoreError, StoreFull
from mesh.runtime.store import DeadLetter
from mesh.runtime.store.sqlite import INLINE_MAX
from mesh.runtime.store.sqlite import SqliteStore as Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "store.db")
    await s.open()
    yield s
    await s.close()


def _where(log: list[tuple[str, str]], name: str):  # type: ignore[no-untyped-def]
    def fn(db: sqlite3.Connection) -> str:
        log.append((name, threading.current_thread().name))
        return name

    return fn


async def test_a_small_operation_on_an_idle_store_commits_on_the_event_loop(store: Store) -> None:
    log: list[tuple[str, str]] = []
    assert await store.call(_where(log, "small"), small=True) == "small"
    assert await store.call(_where(log, "large")) == "large"
    assert log == [("small", threading.current_thread().name), ("large", "store")]


async def test_a_small_operation_never_overtakes_a_queued_one(store: Store) -> None:
    log: list[tuple[str, str]] = []
    resumed: list[str] = []

    async def caller(name: str, small: bool) -> None:
        await store.call(_where(log, name), small=small)
        resumed.append(name)

    first = asyncio.create_task(caller("queued", False))
    await asyncio.sleep(0)  # queued to the thread
    # Block the loop: the thread commits meanwhile, but its caller cannot resume yet.
    time.sleep(0.1)  # noqa: ASYNC251 - on purpose
    assert log == [("queued", "store")]
    await caller("small", True)
    await first
    # The small operation went to the thread rather than commit on the loop while
    # the earlier caller had not handled its result.
    assert log == [("queued", "store"), ("small", "store")]
    assert resumed == ["queued", "small"]
    # With nothing outstanding, small operations commit on the loop again.
    await store.call(_where(log, "again"), small=True)
    assert log[-1] == ("again", threading.current_thread().name)


async def test_appends_keep_sequence_order_across_inline_and_queued_commits(store: Store) -> None:
    box = await store.box_id("b")
    small = [(None, [(box, b"s%d" % i)]) for i in range(INLINE_MAX)]
    large = [(None, [(box, b"l%d" % i)]) for i in range(INLINE_MAX + 1)]
    a, b, c = await asyncio.gather(store.append(small), store.append(large), store.append(small))
    seqs = [s for part in (a, b, c) for unit in part for s in (unit or [])]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    rows = await store.read(box, 0, 1000)
    expected = [rec for units in (small, large, small) for _key, [(_box, rec)] in units]
    assert [r for _s, r in rows] == expected


async def test_duplicates_are_found_whether_committed_inline_or_on_the_thread(store: Store) -> None:
    box = await store.box_id("b")
    key = ("/src", "1")
    assert await store.append([(key, [(box, b"x")])]) != [None]  # inline
    many = [(("/src", str(i)), [(box, b"y")]) for i in range(INLINE_MAX + 1)]
    out = await store.append(many)  # on the thread; ("/src", "1") is among them
    assert out[1] is None
    assert sum(o is None for o in out) == 1


async def test_a_failing_inline_commit_raises_and_keeps_nothing(store: Store) -> None:
    box = await store.box_id("b")

    def bad(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO outbox(seq, box, ts, record) VALUES (999, ?, 0, x'00')", (box,))
        db.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StoreError, match="no_such_table"):
        await store.call(bad, small=True)
    assert await store.read(box, 0, 10) == []


async def test_with_synchronous_full_nothing_commits_on_the_event_loop(tmp_path: Path) -> None:
    store = Store(tmp_path / "full.db", sync="full")
    await store.open()
    try:
        log: list[tuple[str, str]] = []
        await store.call(_where(log, "small"), small=True)
        assert log == [("small", "store")]
    finally:
        await store.close()


async def test_any_exception_in_an_operation_fails_its_caller_never_the_thread(
    store: Store,
) -> None:
    """A non-SQLite error (here a UnicodeEncodeError, as a stray header byte once
    raised) fails only its own caller; its group's other operations commit, the
    faulty one's writes are rolled back, and the thread keeps serving."""
    box = await store.box_id("b")

    def bad(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO kv (key, value) VALUES ('bad', x'00')")
        "\udcff".encode()

    async def grouped() -> list[object]:
        # Queued together, so they share one group commit on the store thread.
        return await asyncio.gather(
            store.append([(None, [(box, b"one")])]),
            store.call(bad),
            store.append([(None, [(box, b"two")])]),
            return_exceptions=True,
        )

    # Before the fix the thread died here and every caller waited for ever.
    first, failed, last = await asyncio.wait_for(grouped(), 10)
    assert isinstance(failed, UnicodeEncodeError)
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    assert await store.get("bad") is None  # rolled back
    with pytest.raises(TypeError):
        await store.call(lambda db: len(None))  # type: ignore[arg-type]
    assert [r for _s, r in await store.read(box, 0, 10)] == [b"one", b"two"]
    await store.put("after", b"ok")  # the thread still serves
    assert await store.get("after") == b"ok"


async def test_a_full_disk_is_store_full_not_a_store_error(store: Store) -> None:
    def full(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(StoreFull):
        await store.call(full)
    await store.put("after", b"ok")
    assert await store.get("after") == b"ok"


async def test_dead_letters_beyond_their_bounds_are_evicted_oldest_first(store: Store) -> None:
    now = time.time()
    old = [DeadLetter("r", "egress:x", "event", b"o" * 100, ts=now - 3600) for _ in range(3)]
    new = [DeadLetter("r", "egress:x", "event", b"n" * 1000, ts=now - i) for i in range(10, 0, -1)]
    await store.dead_letter(old + new)
    assert await store.prune_dead_letters(0, 0) == (0, 0)  # no bounds, nothing goes

    assert await store.prune_dead_letters(0, 600) == (3, 0)
    kept = await store.dead_letters()
    assert [e.record[:1] for e in kept] == [b"n"] * 10

    # Each entry is 1,000 bytes of record plus a small description: 5,500 keeps 5.
    assert await store.prune_dead_letters(5_500, 600) == (0, 5)
    left = await store.dead_letters()
    assert [e.id for e in left] == [e.id for e in kept][5:], "the oldest go first"
    assert await store.prune_dead_letters(5_500, 600) == (0, 0)


async def test_an_outbox_renamed_keeps_its_records_and_a_name_in_use_is_refused(
    store: Store,
) -> None:
    old = await store.box_id("egress:bus:a/#:")
    other = await store.box_id("egress:bus:1")
    before = time.time()
    await store.append([(None, [(old, b"r1")]), (None, [(old, b"r2")])])
    assert await store.box_names() == ["egress:bus:a/#:", "egress:bus:1"]
    assert not await store.rename_box("egress:bus:a/#:", "egress:bus:1")  # taken
    assert not await store.rename_box("nowhere", "egress:bus:9")  # no such box
    assert await store.rename_box("egress:bus:a/#:", "egress:bus:0")
    assert await store.box_id("egress:bus:0") == old
    assert [r for _, r in await store.read(old, 0, 10)] == [b"r1", b"r2"]
    oldest = await store.box_oldest(old)
    assert oldest is not None and before - 1 <= oldest <= time.time()
    assert await store.box_oldest(other) is None
