"""The node's log: text or JSON lines, with repeated identical warnings rate-limited.

``logging: {format: text|json, level: info}`` in the configuration (``mesh run
--log-level`` overrides the level). A line about an event carries its id and
mesh topic (``event_id``, ``topic``: in the message for text, as fields for
JSON), and a line about a link, an egress rule or a broker names it (``peer``,
``egress``, ``broker``). Nothing is logged per event at INFO.

A warning or error identical to one logged within the last
:data:`REPEAT_WINDOW` seconds is not printed again; the next time it is, it
says how many were held back (``(and 41 more like it in the last 5 s)``).
Lines about single events (an ingress rejection, a link's drop) are limited
where they are written, per broker or peer and kind, with a count, so a
client sending a stream of different bad events cannot flood the log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "RepeatFilter", "Throttle", "configure_logging"]

REPEAT_WINDOW = 5.0
_MAX_KEYS = 1024
# Fields a log call may pass with extra=..., shown in JSON lines.
FIELDS = ("node", "task", "peer", "broker", "egress", "event_id", "topic", "reason", "count")
_TASKS = {"link[": "peer", "bridge[": "broker", "egress[": "egress"}  # supervised task names


class RepeatFilter(logging.Filter):
    """Hold back a warning or error identical to one let through in the last window.

    Bounded, in constant time per record: the least recently seen messages are
    forgotten beyond ``_MAX_KEYS``. Lines that name a different event each time
    are not identical; the places that write them per event (ingress
    rejections, link drops) limit themselves per kind and count what they held.
    """

    def __init__(self, window: float = REPEAT_WINDOW) -> None:
        super().__init__()
        self.window = window
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage()[:500])
        now = time.monotonic()
        seen = self._seen
        last = seen.get(key)
        if last is not None and now - last[0] < self.window:
            seen[key] = (last[0], last[1] + 1)
            seen.move_to_end(key)
            return False
        held = last[1] if last is not None else 0
        seen[key] = (now, 0)
        seen.move_to_end(key)
        while len(seen) > _MAX_KEYS:
            seen.popitem(last=False)
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last "
            record.msg += f"{self.window:g} s)"
            record.args = None
            record.count = held
        return True


class Throttle:
    """At most one line per kind every ``every`` seconds, for lines written per event.

    :meth:`allow` answers None while a kind is held back, else how many of it
    were held back since its last line (0 for the first).
    """

    def __init__(self, every: float = REPEAT_WINDOW) -> None:
        self.every = every
        self._last: dict[Hashable, tuple[float, int]] = {}  # kind -> (last line, held)

    def allow(self, kind: Hashable) -> int | None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.every:
            self._last[kind] = (last[0], last[1] + 1)
            return None
        self._last[kind] = (now, 0)
        return last[1] if last is not None else 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the known fields."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.node is not None:
            out["node"] = self.node
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        task = out.get("task")
        if isinstance(task, str) and task.endswith("]"):
            for prefix, field in _TASKS.items():
                if task.startswith(prefix):
                    out.setdefault(field, task[len(prefix) : -1])
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(fmt: str = "text", level: str = "info", *, node: str | None = None) -> None:
    """Send the node's log to stderr in ``fmt``; third-party libraries only warn."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("aiohttp.access", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
