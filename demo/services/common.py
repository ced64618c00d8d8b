"""What the demo services share: CloudEvent helpers and status files."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

TYPE_PREFIX = "com.example.retail."


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Status:
    """Counters a service writes to ``<dir>/<name>.json`` for the demo's summary."""

    def __init__(self, directory: str, name: str) -> None:
        self.path = Path(directory) / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.values: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.write()

    def inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.values[key] = value

    def write(self) -> None:
        with self._lock:
            data = json.dumps(self.values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(data)
        os.replace(tmp, self.path)


def base_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--status-dir", default="var/demo/status")
    return p


def stop_event() -> threading.Event:
    """Set on SIGINT/SIGTERM."""
    ev = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ev.set())
    signal.signal(signal.SIGINT, lambda *_: ev.set())
    return ev
