"""What the benchmark ran on: the machine, the software versions, the project revision."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mesh.testing import find_binary

__all__ = ["machine_info", "versions"]

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    disk = _run(["df", "-hT", str(REPO)]).splitlines()[-1:] or [""]
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "os": os_name,
        "disk": " ".join(disk[0].split()[1:3]) if disk[0] else "",
    }


def _pkg(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    mosq = ""
    with contextlib.suppress(Exception):
        mosq = _run([find_binary("mosquitto"), "-h"]).splitlines()[0]
    nats = ""
    with contextlib.suppress(Exception):
        nats = _run([find_binary("nats-server"), "--version"])
    spy = _run([str(Path(sys.executable).parent / "py-spy"), "--version"]) or "not installed"
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    # The run's own output (bench/results) is written before this is read.
    dirty = _run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"]
    )
    return {
        "python": sys.version.split()[0],
        "project": f"event-mesh-gateway {_pkg('event-mesh-gateway')}",
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "mosquitto": mosq.replace("mosquitto version", "").strip() or "?",
        "nats-server": nats.replace("nats-server:", "").strip() or "?",
        "paho-mqtt": _pkg("paho-mqtt"),
        "nats-py": _pkg("nats-py"),
        "aiohttp": _pkg("aiohttp"),
        "orjson": _pkg("orjson"),
        "py-spy": spy.replace("py-spy", "").strip(),
        "matplotlib": _pkg("matplotlib"),
        "psutil": _pkg("psutil"),
    }
