"""Durable state behind one protocol (:mod:`.base`), and its backends.

``sqlite`` is the embedded default, one node per site. :func:`open_store`
picks the backend a node's configuration names.
"""

from __future__ import annotations

from pathlib import Path

from mesh.runtime.store.base import DeadLetter, DedupKey, EventRecords, Store
from mesh.runtime.store.sqlite import SqliteStore

__all__ = ["DeadLetter", "DedupKey", "EventRecords", "SqliteStore", "Store", "open_store"]


def open_store(data_dir: Path, *, sync: str = "normal") -> Store:
    """The store of a node whose data lives in ``data_dir`` (not opened yet)."""
    return SqliteStore(data_dir / "mesh.db", sync=sync)
