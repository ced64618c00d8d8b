"""One trial: a sink, warm-up probes, the load generator, draining, and the counts.

A trial runs against a started :class:`~bench.systems.System`:

1. the sink subscribes where the system delivers (its own process);
2. probes (sequence number -1) are published every 100 ms until one arrives,
   so routes, bridges and leafnode interest are all in place before counting;
3. the CPU time of every process of the system is read, and the load
   generator (its own process) publishes the trial's messages;
4. the trial drains: it waits until everything confirmed was delivered, or
   until nothing new arrived for ``idle_timeout`` seconds, or ``drain_timeout``;
5. CPU times are read again, the sink reports, and the two bitmaps (confirmed
   by the system's entry broker, delivered to the sink) give sent, delivered,
   lost (confirmed, never delivered) and duplicated (delivered more than once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.procs import busy_cpu_seconds, cpu_seconds, rss_bytes
from bench.proto import MqttPublisher, NatsPublisher, Publisher
from bench.systems import Endpoint, System

__all__ = [
    "Sink",
    "TrialSpec",
    "count_lost",
    "new_trial_id",
    "publish_probe_until",
    "run_loadgen",
    "run_trial",
    "spawn_py_spy",
    "start_sink",
]


@dataclass
class TrialSpec:
    """What the load generator does in one trial."""

    count: int
    rate: float = 0.0  # 0: closed loop
    duration: float = 60.0  # stop sending after this many seconds
    window: int = 1000
    drain_timeout: float = 60.0
    idle_timeout: float = 3.0
    e2e_window: int = 0  # >0: at most this many events ahead of the sink's highest seq


def _log_file(path: Path) -> IO[bytes]:
    """A log file for a subprocess's output, appended to."""
    return open(path, "ab")


def new_trial_id(prefix: str) -> str:
    return f"{prefix.replace('-', '')}{secrets.token_hex(4)}"


class Sink:
    """The sink subprocess and its JSON-lines protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ready = asyncio.Event()
        self.probe = asyncio.Event()
        self.delivered = 0
        self.duplicates = 0
        self.last_change = time.monotonic()
        self.closed: str | None = None
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self.done = asyncio.Event()
        self.progress = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "progress" in msg:
                    if msg["progress"] != self.delivered or msg["duplicates"] != self.duplicates:
                        self.last_change = time.monotonic()
                    self.delivered = int(msg["progress"])
                    self.duplicates = int(msg["duplicates"])
                    self.progress.set()
                elif "ready" in msg:
                    self.ready.set()
                elif "probe" in msg:
                    self.probe.set()
                elif "closed" in msg:
                    self.closed = str(msg["closed"])
                elif "final" in msg:
                    self.final = msg["final"]
                elif "error" in msg:
                    self.error = str(msg["error"])
        finally:
            self.done.set()
            self.ready.set()  # wake anyone waiting; they check .error

    async def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            await self.proc.wait()
        if self.final is None:
            raise RuntimeError(f"the sink gave no result ({self.error or 'no output'})")
        return self.final


async def start_sink(
    ep: Endpoint, trial: str, capacity: int, out: Path, log: Path, progress: Path | None = None
) -> Sink:
    extra = ["--progress", str(progress)] if progress is not None else []
    with _log_file(log) as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sink",
            "--proto",
            ep.proto,
            "--port",
            str(ep.port),
            "--topic",
            ep.for_trial(trial),
            "--run",
            trial,
            "--capacity",
            str(capacity),
            "--out",
            str(out),
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    sink = Sink(proc)
    try:
        await asyncio.wait_for(sink.ready.wait(), 20)
    except TimeoutError:
        sink.error = "the sink did not subscribe within 20 s"
    if sink.error or not sink.ready.is_set():
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"sink failed: {sink.error}")
    return sink


async def publish_probe_until(
    ep: Endpoint, trial: str, arrived: asyncio.Event, timeout: float
) -> bool:
    """Publish a probe every 100 ms until ``arrived`` is set; False on timeout."""
    loop = asyncio.get_running_loop()
    pub: Publisher = (
        MqttPublisher(ep.for_trial(trial), trial, 1, 1, client_id=f"bench-probe-{trial}")
        if ep.proto == "mqtt"
        else NatsPublisher(ep.for_trial(trial), trial, 1, 1)
    )
    await loop.create_connection(lambda: pub, "127.0.0.1", ep.port)
    try:
        await pub.ready()
        deadline = time.monotonic() + timeout
        while not arrived.is_set():
            if time.monotonic() > deadline:
                return False
            pub.publish_probe()  # type: ignore[attr-defined]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.1)
        return True
    finally:
        pub.close()


async def run_loadgen(
    ep: Endpoint, trial: str, spec: TrialSpec, out: Path, log: Path, progress: Path | None = None
) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--proto",
        ep.proto,
        "--port",
        str(ep.port),
        "--topic",
        ep.for_trial(trial),
        "--run",
        trial,
        "--count",
        str(spec.count),
        "--rate",
        str(spec.rate),
        "--duration",
        str(spec.duration),
        "--window",
        str(spec.window),
        "--ack-timeout",
        str(max(10.0, spec.drain_timeout)),
        "--out",
        str(out),
    ]
    if spec.e2e_window and progress is not None:
        args += ["--e2e-window", str(spec.e2e_window), "--progress", str(progress)]
    with _log_file(log) as err:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=err
        )
    try:
        stdout, _ = await asyncio.wait_for(
            proc.communicate(), spec.duration + max(10.0, spec.drain_timeout) + 30
        )
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"the load generator gave no result (see {log})")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}")
    return result


async def spawn_py_spy(pid: int, out: Path, fmt: str, log: Path) -> asyncio.subprocess.Process:
    """Attach ``py-spy record`` to ``pid`` until it is sent SIGINT."""
    exe = Path(sys.executable).parent / "py-spy"
    with _log_file(log) as err:
        return await asyncio.create_subprocess_exec(
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--threads",
            "--format",
            fmt,
            "--output",
            str(out),
            stdout=err,
            stderr=err,
        )


def count_lost(acked: bytes, seen: bytes) -> tuple[int, int, list[int]]:
    """(confirmed but never delivered, delivered but never confirmed, a few lost seqs)."""
    lost = 0
    unconfirmed_delivered = 0
    sample: list[int] = []
    n = min(len(acked), len(seen))
    if acked[:n] == seen[:n]:
        return 0, 0, []
    for i in range(n):
        a, s = acked[i], seen[i]
        if a and not s:
            lost += 1
            if len(sample) < 10:
                sample.append(i)
        elif s and not a:
            unconfirmed_delivered += 1
    return lost, unconfirmed_delivered, sample


async def run_trial(
    system: System,
    spec: TrialSpec,
    workdir: Path,
    *,
    name: str,
    profile: Callable[[], Any] | None = None,
    sample_every: float = 0.5,
) -> dict[str, Any]:
    """Run one trial against a started system; return its figures."""
    trial = new_trial_id(name)
    tdir = workdir / "trials" / trial
    tdir.mkdir(parents=True, exist_ok=True)
    progress = tdir / "progress.bin" if spec.e2e_window else None
    sink = await start_sink(
        system.sub, trial, spec.count, tdir / "seen.bin", tdir / "sink.log", progress
    )
    result: dict[str, Any] = {"trial": trial, "system": system.key, "spec": spec.__dict__.copy()}
    try:
        if not await publish_probe_until(system.pub, trial, sink.probe, 45.0):
            raise RuntimeError(f"{system.key}: no probe arrived within 45 s")
        pids = system.pids()
        cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
        busy0 = busy_cpu_seconds()
        me0 = cpu_seconds(os.getpid())
        rss_peak = {role: rss_bytes(pid) for role, pid in pids.items()}
        rss_start = dict(rss_peak)
        t0 = time.monotonic()
        gen_task = asyncio.create_task(
            run_loadgen(system.pub, trial, spec, tdir / "acked.bin", tdir / "loadgen.log", progress)
        )
        spies = await profile() if profile is not None else []
        while not gen_task.done():
            await asyncio.wait({gen_task}, timeout=sample_every)
            for role, pid in pids.items():
                rss_peak[role] = max(rss_peak[role], rss_bytes(pid))
        gen = gen_task.result()
        # Drain: everything confirmed delivered, or no progress for idle_timeout.
        drain_start = time.monotonic()
        while True:
            if sink.delivered >= gen["acked"] and sink.duplicates == 0:
                break
            now = time.monotonic()
            if now - sink.last_change > spec.idle_timeout and now - drain_start > spec.idle_timeout:
                break
            if now - drain_start > spec.drain_timeout:
                break
            if sink.closed is not None and now - sink.last_change > 1.0:
                break
            sink.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.progress.wait(), 0.5)
            for role, pid in pids.items():
                rss_peak[role] = max(rss_peak[role], rss_bytes(pid))
        if sink.delivered >= gen["acked"]:
            # Let late duplicates show up: a short quiet period after the last message.
            await asyncio.sleep(0.5)
        cpu1 = {role: cpu_seconds(pid) for role, pid in pids.items()}
        busy = busy_cpu_seconds() - busy0 - (cpu_seconds(os.getpid()) - me0)
        wall = time.monotonic() - t0
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                await asyncio.wait_for(spy.wait(), 30)
            except TimeoutError:
                spy.kill()
                await spy.wait()
        final = await sink.stop()
    except BaseException:
        with contextlib.suppress(Exception):
            sink.proc.kill()
        raise
    acked = (tdir / "acked.bin").read_bytes()
    seen = (tdir / "seen.bin").read_bytes()
    lost, unconfirmed_delivered, lost_sample = count_lost(acked, seen)
    delivered = int(final["delivered"])
    first_send = float(gen["first_send"])
    last_recv = float(final["last_recv"]) or first_send
    span = max(last_recv - first_send, 1e-9)
    cpu = {role: cpu1[role] - cpu0[role] for role in cpu0}
    cpu["load generator"] = float(gen["cpu_seconds"])
    cpu["sink"] = float(final["cpu_seconds"])
    # What the rest of the machine used meanwhile (other users' processes, py-spy, ...).
    other = max(0.0, busy - sum(cpu.values()))
    result.update(
        {
            "sent": int(gen["sent"]),
            "acked": int(gen["acked"]),
            "unconfirmed": int(gen["unconfirmed"]),
            "delivered": delivered,
            "lost": lost,
            "lost_sample": lost_sample,
            "duplicates": int(final["duplicates"]),
            "delivered_unconfirmed": unconfirmed_delivered,
            "foreign": int(final["foreign"]),
            "sink_closed": final["closed"],
            "sink_errors": final["errors"],
            "delivered_rate": delivered / span if delivered else 0.0,
            "send_rate": float(gen["send_rate"]),
            "ack_rate": float(gen["ack_rate"]),
            "max_lag": float(gen["max_lag"]),
            "e2e_waits": int(gen.get("e2e_waits", 0)),
            "final_lag": float(gen["final_lag"]),
            "first_send": first_send,
            "last_send": float(gen["last_send"]),
            "last_recv": last_recv,
            "span": span,
            "wall": wall,
            "latency_ms": final["latency_ms"],
            "timeline": final["timeline"],
            "cpu_seconds": cpu,
            "other_cores": other / wall if wall > 0 else 0.0,
            "rss_start": rss_start,
            "rss_peak": rss_peak,
            "loadgen_errors": gen["errors"],
        }
    )
    # The bitmaps are large and reproducible; keep only the summary.
    for f in ("acked.bin", "seen.bin", "progress.bin"):
        with contextlib.suppress(OSError):
            (tdir / f).unlink()
    return result
