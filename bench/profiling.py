"""Where a node's time goes: summaries of py-spy's collapsed stacks (``--format raw``).

py-spy records with ``--threads``, so each line reads
``thread (TID): NAME;frame;frame;… COUNT`` with frames ``function (file:line)``,
outermost first. Idle samples are not recorded, so shares are shares of the
time the process was on a CPU (the GIL is held by one thread at a time; the
SQLite and socket calls run without it).

py-spy's own idle detection misses threads blocked in a queue or in
``select``; samples whose innermost frame is such a blocking call (found by
their source line, see :func:`wait_lines`) are counted as *waiting* and left
out of the shares.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# Main-thread samples: the innermost frame of one of these modules decides the category
# (helpers such as mesh/core/event.py or mesh/core/templates.py count for their caller).
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("ingress: decode / wrap into CloudEvents", re.compile(r"\(mesh/(core|runtime)/ingress\.py")),
    (
        "routing and outbox bookkeeping",
        re.compile(r"\(mesh/(runtime/(router|outbox)|core/routing)\.py"),
    ),
    ("store calls (event-loop side)", re.compile(r"\(mesh/runtime/store(/|\.py)")),
    (
        "peer link: batches, acks, credit",
        re.compile(r"\(mesh/(runtime/link|core/(envelope|frames))\.py"),
    ),
    ("egress: encode and publish", re.compile(r"\(mesh/(core|runtime)/egress\.py")),
    ("bridge code on the event loop", re.compile(r"\(bridges/")),
    ("HTTP server / admin API", re.compile(r"\(mesh/api/")),
]

# (module, the blocking call's source text as it appears in that module's file)
_BLOCKING_CALLS = [
    ("mesh.runtime.store", "self._ops.get()"),
    ("concurrent.futures.thread", "work_queue.get(block=True)"),
    ("paho.mqtt.client", "select.select(rlist, wlist, [], timeout)"),
    ("selectors", "self._selector.poll("),
]
_BLOCKING_FUNCS = re.compile(
    r"^(Condition\.wait|Event\.wait|wait|_wait_for_tstate_lock) \(threading"
)


@cache
def wait_lines() -> frozenset[tuple[str, int]]:
    """(file as py-spy prints it, line) of calls where a thread blocks without working."""
    out: set[tuple[str, int]] = set()
    for module, text in _BLOCKING_CALLS:
        with contextlib.suppress(ImportError, OSError, AttributeError):
            path = Path(str(importlib.import_module(module).__file__))
            # py-spy prints paths relative to sys.path entries: keep the module's own part.
            parts = module.split(".")
            shown = "/".join([*parts[:-1], path.name]) if len(parts) > 1 else path.name
            for no, line in enumerate(path.read_text().splitlines(), 1):
                if text in line:
                    out.add((shown, no))
    return frozenset(out)


def _is_wait(frame: str) -> bool:
    m = _FRAME.match(frame)
    if not m:
        return False
    if _BLOCKING_FUNCS.match(f"{m['func']} ({m['file']}"):
        return True
    return bool(m["line"]) and (m["file"], int(m["line"])) in wait_lines()


def _parse(path: Path) -> list[tuple[str, list[str], int]]:
    out: list[tuple[str, list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, _, frames = stack.partition(";")
        thread = head.split(": ", 1)[1] if ": " in head else head
        out.append((thread, frames.split(";") if frames else [], int(count)))
    return out


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop (MainThread)"
    if name == "store":
        return "SQLite store thread"
    if name.startswith("paho-mqtt-client"):
        return "paho MQTT network thread"
    if name.startswith("asyncio_"):
        return "executor threads (asyncio.to_thread)"
    return name


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m['func']} ({m['file']})"


def _category(thread: str, frames: list[str]) -> str:
    kind = _thread_kind(thread)
    if kind == "SQLite store thread":
        return "SQLite: group commits, reads, deletes (store thread)"
    if kind == "paho MQTT network thread":
        if any("(bridges/" in f for f in frames):
            return "MQTT bridge callbacks handing messages to the loop (paho thread)"
        return "MQTT protocol I/O in paho (paho thread)"
    if kind != "event loop (MainThread)":
        return kind
    for f in reversed(frames):
        for label, rx in CATEGORIES:
            if rx.search(f):
                return label
    return "asyncio event loop machinery (no project frame)"


def summarize(path: Path, rate: int = 100) -> dict[str, Any]:
    """Threads, categories, top self-time and inclusive functions of one raw profile."""
    stacks = _parse(path)
    waiting = sum(c for _, frames, c in stacks if frames and _is_wait(frames[-1]))
    stacks = [(t, f, c) for t, f, c in stacks if not (f and _is_wait(f[-1]))]
    total = sum(c for _, _, c in stacks)
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for thread, frames, count in stacks:
        threads[_thread_kind(thread)] += count
        short = [_short(f) for f in frames]
        if short:
            leaf[short[-1]] += count
        for f in set(short):
            if "mesh/" in f or "bridges/" in f:
                inclusive[f] += count
        categories[_category(thread, short)] += count

    def table(c: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"name": k, "samples": v, "share": v / total if total else 0.0}
            for k, v in c.most_common(n)
        ]

    return {
        "samples": total,
        "waiting_samples": waiting,
        "cpu_seconds": total / rate,
        "threads": table(threads, 10),
        "categories": table(categories, 20),
        "self": table(leaf, 15),
        "inclusive": table(inclusive, 20),
    }
