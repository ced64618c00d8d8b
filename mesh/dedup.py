"""The destination's duplicate filter over (``source``, ``id``).

A bounded window, oldest forgotten first. Only local delivery consults it:
an event forwarded onwards is de-duplicated where it is delivered.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Dedup"]


class Dedup:
    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str]) -> bool:
        """Remember ``key``; False if it was already there (a duplicate)."""
        if self.size <= 0:
            return True
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def discard(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)
