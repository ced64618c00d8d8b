"""Exponential backoff with full jitter, for supervisors that reconnect."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next()`` returns the next delay: random in [d/2, d], d doubling up to ``maximum``."""

    def __init__(self, initial: float = 0.1, maximum: float = 10.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._current = initial

    def next(self) -> float:
        d = self._current
        self._current = min(self.maximum, self._current * self.factor)
        return d / 2 + random.random() * d / 2

    def reset(self) -> None:
        self._current = self.initial
