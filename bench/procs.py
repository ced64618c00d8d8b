"""Processes the benchmark starts: gateway nodes, configured nats-servers, and measuring them.

Brokers come from :mod:`mesh.testing` (real Mosquitto and nats-server on free
loopback ports). Gateway nodes are ``mesh run FILE`` subprocesses with a
generated YAML file and a data directory on disk. Everything here is
synchronous; the orchestrator calls it from a thread when it must not block.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from mesh.testing import Mosquitto, NatsServer, free_port

__all__ = [
    "MOSQUITTO_DEFAULTS",
    "ConfiguredNats",
    "NodeProcess",
    "busy_cpu_seconds",
    "cpu_seconds",
    "disk_usage",
    "http_json",
    "new_mosquitto",
    "rss_bytes",
]

REPO = Path(__file__).resolve().parent.parent

# mesh.testing.Mosquitto writes a lossless configuration for the gateway's
# sessions (max_queued_messages 0, max_inflight_messages 1000). Appended
# after it, these lines put Mosquitto 2.0's own defaults back.
MOSQUITTO_DEFAULTS = "max_queued_messages 1000\nmax_inflight_messages 20\n"
# Notices include "Outgoing messages are being dropped for client ...": evidence.
_LOG_NOTICE = "log_type notice\n"


def new_mosquitto(workdir: Path, extra: str = "") -> Mosquitto:
    """A Mosquitto from mesh.testing with ``extra`` configuration lines, logging notices."""
    return Mosquitto(workdir=workdir, extra=_LOG_NOTICE + extra)


class ConfiguredNats(NatsServer):
    """A nats-server with a configuration file (for leafnode setups)."""

    def __init__(self, workdir: Path, conf: str, port: int | None = None) -> None:
        super().__init__(port=port, workdir=workdir)
        self.conf = conf

    def _command(self) -> list[str]:
        path = self.workdir / "nats.conf"
        path.write_text(self.conf)
        return [*super()._command(), "-c", str(path)]


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class NodeProcess:
    """One gateway node: ``python -m mesh.cli run FILE`` with a generated configuration."""

    def __init__(self, workdir: Path, config: dict[str, Any], port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.node_id = str(config["node"]["id"])
        config["node"]["listen"] = f"127.0.0.1:{self.port}"
        config["node"].setdefault("data_dir", str(workdir / "data"))
        self.data_dir = Path(config["node"]["data_dir"])
        self.config = config
        self.config_path = workdir / f"{self.node_id}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / f"{self.node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = 0  # times SIGTERM was not enough

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mesh.cli", "run", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited: {self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                http_json(self.url + "/api/health", 0.5)
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.node_id} did not come up: {self.log_tail()}")

    def peers_up(self) -> set[str]:
        try:
            data = http_json(self.url + "/api/peers")
        except (OSError, urllib.error.URLError, ValueError):
            return set()
        return {p["id"] for p in data["peers"] if p["state"] == "up"}

    def stats(self) -> dict[str, Any]:
        return dict(http_json(self.url + "/api/stats", 5.0))

    def wait_peers(self, peers: set[str], timeout: float = 30.0, up: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.peers_up()
            if (peers <= now) if up else not (peers & now):
                return
            time.sleep(0.1)
        state = "up" if up else "down"
        raise RuntimeError(f"node {self.node_id}: peers {sorted(peers)} not {state}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (counted in ``killed``)."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed += 1
                p.kill()
                p.wait(5)
        self.proc = None
        return p.returncode

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the node's log, on one line (for error messages)."""
        if not self.log.exists():
            return ""
        tail = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines()[-lines:]]
        return " / ".join(ln for ln in tail if ln)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine ran (user + nice + system), all cores.

    Interrupt and softirq time (much of it loopback networking for our own
    traffic) and hypervisor steal are left out.
    """
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system)


def rss_bytes(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk by the files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total
