"""The scenarios: calibration, S1 throughput, S2 latency, S3 backlog, S4 cost, the profile.

:class:`Bench` runs them and fills one JSON-able ``results`` dict, which
:mod:`bench.report` turns into ``report.md`` and the charts. Every wait is
bounded; every process started is stopped in a ``finally``.

Run order, so that slow drift (thermal, page cache) touches every system alike:
for each run, the calibration, then each system in turn (S2 at each rate,
then S1); after all runs, S4's idle node, S3's backlog, and the profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    TrialSpec,
    count_lost,
    new_trial_id,
    publish_probe_until,
    run_loadgen,
    run_trial,
    spawn_py_spy,
    start_sink,
)
from bench.procs import NodeProcess, cpu_seconds, disk_usage, new_mosquitto, rss_bytes
from bench.profiling import summarize
from bench.systems import TOKEN, GatewayNats, System, make_system
from mesh.testing import Mosquitto, NatsServer

__all__ = ["COMPARED", "Bench", "Settings"]

COMPARED = ["a", "b", "c", "d", "e"]
REFERENCES = ["ref-mqtt", "ref-nats"]
LOSSLESS = {"a", "b", "d", "ref-mqtt"}  # a loss here is a fault, worth evidence


@dataclass
class Settings:
    """Sizes and durations; ``--quick`` shrinks them."""

    quick: bool = False
    runs: int = 3
    scenarios: list[str] = field(default_factory=lambda: ["S1", "S2", "S3", "S4"])
    systems: list[str] = field(default_factory=lambda: list(COMPARED))
    calibration_seconds: float = 3.0
    ref_count: int = 100_000
    s1_seconds: float = 8.0
    s1_window: int = 10_000
    s1_max_count: int = 2_000_000
    s1_burst: int = 50_000
    s2_rates: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    s2_seconds: float = 5.0
    s3_runs: int = 1
    s3_events: int = 1_000_000
    s3_timeout: float = 420.0
    s4_idle_seconds: float = 30.0
    s4_runs: int = 3
    profile: bool = True

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            quick=True,
            runs=1,
            calibration_seconds=1.0,
            ref_count=20_000,
            s1_seconds=2.5,
            s1_max_count=600_000,
            s1_burst=10_000,
            s2_seconds=2.0,
            s3_runs=1,
            s3_events=30_000,
            s3_timeout=120.0,
            s4_idle_seconds=10.0,
            s4_runs=1,
        )


class Bench:
    """Runs the scenarios; everything measured lands in ``self.results``."""

    def __init__(self, settings: Settings, workdir: Path, results_dir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.results_dir = results_dir
        self.evidence_dir = results_dir / "evidence"
        self.t0 = time.monotonic()
        self.results: dict[str, Any] = {
            "settings": asdict(settings),
            "calibration": {"discard": {"mqtt": [], "nats": []}, "ref": {}},
            "s1": {},
            "s1_burst": {},
            "s2": {},
            "s3": [],
            "s4": {"idle": []},
            "profile": {},
            "problems": [],
            "logs": {},
            "timings": {},
        }

    # -- plumbing ----------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def problem(self, system: str, what: str, evidence: str = "", run: int | None = None) -> None:
        self.log(f"PROBLEM {system}: {what}")
        self.results["problems"].append(
            {"system": system, "run": run, "what": what, "evidence": evidence}
        )

    async def _timed(self, name: str, coro: Awaitable[None]) -> None:
        start = time.monotonic()
        try:
            await coro
        finally:
            self.results["timings"][name] = self.results["timings"].get(name, 0.0) + (
                time.monotonic() - start
            )

    async def run(self) -> dict[str, Any]:
        sc = set(self.s.scenarios)
        if self.evidence_dir.exists():
            shutil.rmtree(self.evidence_dir)
        for run in range(1, self.s.runs + 1):
            if sc & {"S1", "S2"}:
                await self._timed("calibration", self.calibrate(run))
                for key in self.s.systems:
                    await self._timed(f"S1+S2 {key}", self.system_pass(run, key, sc))
        if "S4" in sc:
            await self._timed("S4 idle", self.s4_idle())
        if "S3" in sc:
            await self._timed("S3", self.s3_backlog())
        profiled = next((k for k in ("a", "b") if k in self.s.systems), None)
        if "S1" in sc and self.s.profile and profiled is not None:
            await self._timed("profile", self.profile(profiled))
        return self.results

    async def _start(self, system: System) -> None:
        await asyncio.to_thread(system.start)

    async def _stop(self, system: System, run: int | None, label: str = "") -> None:
        label = label or system.key
        for p in await asyncio.to_thread(system.stop):
            self.problem(label, p, run=run)
        for role, path in system.logs().items():
            self._scan_log(label, role, path)

    # -- calibration -------------------------------------------------------------------

    async def calibrate(self, run: int) -> None:
        """The load generator against a discarding server, and one-broker references."""
        for proto in ("mqtt", "nats"):
            with contextlib.suppress(Exception):
                r = await self._discard(proto)
                self.results["calibration"]["discard"][proto].append(r)
                self.log(f"calibration run {run}: generator → discard ({proto}) {r['rate']:,.0f}/s")
        for key in REFERENCES:
            system = make_system(key, self.workdir / f"run{run}")
            try:
                await self._start(system)
                r = await self._trial(system, TrialSpec(count=self.s.ref_count), run, "ref")
                self.results["calibration"]["ref"].setdefault(key, []).append(r)
            finally:
                await self._stop(system, run)

    async def _discard(self, proto: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.discard",
            "--proto",
            proto,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            port = int(json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))["port"])
            from bench.systems import Endpoint

            ep = Endpoint("mqtt" if proto == "mqtt" else "nats", port, "bench/{trial}/ev")
            trial = new_trial_id("discard")
            tdir = self.workdir / "trials" / trial
            tdir.mkdir(parents=True, exist_ok=True)
            spec = TrialSpec(
                count=10_000_000, duration=self.s.calibration_seconds, drain_timeout=10
            )
            gen = await run_loadgen(ep, trial, spec, tdir / "acked.bin", tdir / "loadgen.log")
            with contextlib.suppress(OSError):
                (tdir / "acked.bin").unlink()
        finally:
            proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return {
            "rate": gen["ack_rate"],
            "acked": gen["acked"],
            "cpu_seconds": gen["cpu_seconds"],
            "seconds": gen["last_ack"] - gen["first_send"],
        }

    # -- S1 and S2 ---------------------------------------------------------------------

    async def _trial(
        self,
        system: System,
        spec: TrialSpec,
        run: int,
        what: str,
        profile: Callable[[], Awaitable[list[Any]]] | None = None,
    ) -> dict[str, Any]:
        try:
            r = await run_trial(system, spec, self.workdir, name=system.key, profile=profile)
        except Exception as exc:
            self.problem(system.key, f"{what}: trial failed: {exc}", run=run)
            return {"error": str(exc), "system": system.key, "spec": asdict(spec)}
        r["run"] = run
        bad = []
        if r["lost"]:
            bad.append(f"{r['lost']:,} of {r['acked']:,} confirmed messages never delivered")
        if r["duplicates"]:
            bad.append(f"{r['duplicates']:,} duplicates")
        if r["sink_closed"]:
            bad.append(f"the server closed the sink's connection: {r['sink_closed']}")
        note = (
            f"{what} run {run} {system.key}: sent {r['acked']:,}, delivered {r['delivered']:,} "
            f"({r['delivered_rate']:,.0f}/s), lost {r['lost']:,}, dup {r['duplicates']:,}"
        )
        if "latency_ms" in r and r["latency_ms"] and spec.rate:
            note += f", p50 {r['latency_ms']['p50']:.2f} ms p99 {r['latency_ms']['p99']:.2f} ms"
        self.log(note)
        if bad and system.key in LOSSLESS:
            evidence = await self._evidence(system, r, what, run)
            self.problem(system.key, f"{what}: " + "; ".join(bad), evidence, run)
            r["evidence"] = evidence
        return r

    async def _evidence(self, system: System, r: dict[str, Any], what: str, run: int) -> str:
        """py-spy dumps and /api/stats of every node, saved beside the report."""
        if not system.nodes:
            return ""
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        name = f"{system.key}-run{run}-{re.sub(r'[^a-z0-9]+', '-', what.lower())}-{r['trial']}.txt"
        path = self.evidence_dir / name
        parts = [f"trial {r['trial']}: {json.dumps({k: r.get(k) for k in _SUMMARY_KEYS})}"]
        for role, node in system.nodes.items():
            if node.proc is None:
                continue
            dump = await asyncio.to_thread(_py_spy_dump, node.pid)
            parts.append(f"===== {role} (pid {node.pid}): py-spy dump\n{dump}")
            try:
                stats = await asyncio.to_thread(node.stats)
                text = json.dumps(
                    {k: stats.get(k) for k in ("brokers", "peers", "outboxes")}, indent=1
                )
            except Exception as exc:
                text = f"GET /api/stats failed: {type(exc).__name__}: {exc}"
            parts.append(f"===== {role}: /api/stats\n{text}")
        path.write_text("\n\n".join(parts) + "\n")
        return str(path.relative_to(self.results_dir))

    async def system_pass(self, run: int, key: str, sc: set[str]) -> None:
        system = make_system(key, self.workdir / f"run{run}")
        self.log(f"run {run}: starting system {key} ({system.label})")
        try:
            await self._start(system)
        except Exception as exc:
            self.problem(key, f"could not start: {exc}", run=run)
            await self._stop(system, run)
            return
        try:
            if "S2" in sc:
                for rate in self.s.s2_rates:
                    spec = TrialSpec(
                        count=int(rate * self.s.s2_seconds),
                        rate=float(rate),
                        duration=self.s.s2_seconds + 10,
                        drain_timeout=20,
                        idle_timeout=3,
                    )
                    r = await self._trial(system, spec, run, f"S2 {rate}/s")
                    self.results["s2"].setdefault(key, {}).setdefault(str(rate), []).append(r)
                    system = await self._maybe_restart(system, r, run)
            if "S1" in sc:
                r = await self._trial(system, self._s1_spec(), run, "S1")
                self.results["s1"].setdefault(key, []).append(r)
                system = await self._maybe_restart(system, r, run)
                burst = TrialSpec(count=self.s.s1_burst, drain_timeout=60)
                r = await self._trial(system, burst, run, "S1 burst")
                self.results["s1_burst"].setdefault(key, []).append(r)
        finally:
            await self._stop(system, run)

    def _s1_spec(self) -> TrialSpec:
        """S1: closed loop end to end, for a fixed time."""
        return TrialSpec(
            count=self.s.s1_max_count,
            duration=self.s.s1_seconds,
            e2e_window=self.s.s1_window,
            drain_timeout=30,
        )

    async def _maybe_restart(self, system: System, r: dict[str, Any], run: int) -> System:
        """A gateway that lost messages may be stuck: start a fresh one for the next trial."""
        if not system.nodes or not (r.get("error") or r.get("lost")):
            return system
        self.log(f"restarting system {system.key} after a faulty trial")
        await self._stop(system, run)
        fresh = make_system(system.key, self.workdir / f"run{run}-restart{time.monotonic_ns()}")
        await self._start(fresh)
        return fresh

    # -- S3 ----------------------------------------------------------------------------

    async def s3_backlog(self) -> None:
        for run in range(1, self.s.s3_runs + 1):
            system = GatewayNats(self.workdir / f"s3-run{run}")
            self.log(f"S3 run {run}: {self.s.s3_events:,} events for a peer that is down")
            try:
                await self._start(system)
                r = await self._s3_once(system, run)
                self.results["s3"].append(r)
            except Exception as exc:
                self.problem("S3", f"{type(exc).__name__}: {exc}", run=run)
            finally:
                await self._stop(system, run, "S3 (a, node B stopped on purpose)")

    async def _s3_once(self, system: GatewayNats, run: int) -> dict[str, Any]:
        n = self.s.s3_events
        node_a, node_b = system.nodes["node A"], system.nodes["node B"]
        trial = new_trial_id("s3")
        tdir = self.workdir / "trials" / trial
        tdir.mkdir(parents=True, exist_ok=True)
        sink = await start_sink(system.sub, trial, n, tdir / "seen.bin", tdir / "sink.log")
        samples: list[dict[str, Any]] = []
        try:
            if not await publish_probe_until(system.pub, trial, sink.probe, 45.0):
                raise RuntimeError("no probe crossed the mesh before node B was stopped")
            rc = await asyncio.to_thread(node_b.stop)
            await asyncio.to_thread(node_a.wait_peers, {"bench-b"}, 30.0, False)
            self.log(f"S3: node B stopped (status {rc}); node A sees it down")
            await asyncio.sleep(2.0)
            pid_a = node_a.pid
            data_a = node_a.data_dir
            rss0 = rss_bytes(pid_a)
            disk0 = disk_usage(data_a)
            cpu0 = cpu_seconds(pid_a)
            t0 = time.monotonic()
            spec = TrialSpec(count=n, duration=self.s.s3_timeout, drain_timeout=60)
            gen_task = asyncio.create_task(
                run_loadgen(system.pub, trial, spec, tdir / "acked.bin", tdir / "loadgen.log")
            )
            depth = 0
            deadline = t0 + self.s.s3_timeout
            while time.monotonic() < deadline:
                depth = await asyncio.to_thread(_peer_depth, node_a, "bench-b")
                samples.append(
                    {
                        "t": time.monotonic() - t0,
                        "phase": "queue",
                        "depth": depth,
                        "rss": rss_bytes(pid_a),
                        "disk": disk_usage(data_a),
                    }
                )
                if gen_task.done() and depth >= gen_task.result()["acked"]:
                    break
                await asyncio.sleep(1.0)
            gen = await gen_task
            t_queued = time.monotonic()
            if depth < gen["acked"]:
                evidence = await self._s3_evidence(system, run)
                self.problem(
                    "S3",
                    f"only {depth:,} of {gen['acked']:,} events acknowledged by Mosquitto A "
                    f"reached node A's outbox within {self.s.s3_timeout:.0f} s (the rest stayed "
                    "in Mosquitto A's session for node A)",
                    evidence,
                    run=run,
                )
            await asyncio.sleep(2.0)
            rss_q = rss_bytes(pid_a)
            disk_q = disk_usage(data_a)
            cpu_q = cpu_seconds(pid_a)
            peak = max([s["rss"] for s in samples] + [rss_q])
            self.log(
                f"S3: {depth:,} queued in {t_queued - t0:.0f} s; node A RSS "
                f"{rss0 / 2**20:.0f} → {rss_q / 2**20:.0f} MB (peak {peak / 2**20:.0f}), "
                f"disk {disk0 / 2**20:.0f} → {disk_q / 2**20:.0f} MB"
            )
            # Drain: node B comes back; it and node A's redial backoff are part of the time.
            t_restart = time.monotonic()
            await asyncio.to_thread(node_b.start)
            first_idle = 45.0  # the redial backoff reaches 15 s plus jitter
            while True:
                now = time.monotonic()
                samples.append(
                    {
                        "t": now - t0,
                        "phase": "drain",
                        "delivered": sink.delivered,
                        "rss": rss_bytes(pid_a),
                        "disk": disk_usage(data_a),
                    }
                )
                if sink.delivered >= gen["acked"]:
                    break
                idle = now - max(sink.last_change, t_restart)
                if idle > (first_idle if sink.delivered == 0 else 15.0):
                    break
                if now - t_restart > self.s.s3_timeout:
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(1.0)
            rss_d = rss_bytes(pid_a)
            disk_d = disk_usage(data_a)
            cpu_d = cpu_seconds(pid_a)
            final = await sink.stop()
        except BaseException:
            with contextlib.suppress(Exception):
                sink.proc.kill()
            raise
        lost, _, sample = count_lost(
            (tdir / "acked.bin").read_bytes(), (tdir / "seen.bin").read_bytes()
        )
        for f in ("acked.bin", "seen.bin"):
            with contextlib.suppress(OSError):
                (tdir / f).unlink()
        first, last = float(final["first_recv"]), float(final["last_recv"])
        delivered = int(final["delivered"])
        r = {
            "run": run,
            "events": n,
            "acked": gen["acked"],
            "queued": depth,
            "ingest_seconds": t_queued - t0,
            "ingest_rate": depth / max(t_queued - t0, 1e-9),
            "rss_baseline": rss0,
            "rss_queued": rss_q,
            "rss_peak": peak,
            "rss_after_drain": rss_d,
            "disk_baseline": disk0,
            "disk_queued": disk_q,
            "disk_after_drain": disk_d,
            "cpu_ingest": cpu_q - cpu0,
            "cpu_drain": cpu_d - cpu_q,
            "reconnect_seconds": (first - t_restart) if delivered else None,
            "drain_seconds": (last - first) if delivered else None,
            "drain_rate": delivered / max(last - first, 1e-9) if delivered > 1 else 0.0,
            "drain_total_seconds": (last - t_restart) if delivered else None,
            "delivered": delivered,
            "lost": lost,
            "lost_sample": sample,
            "duplicates": int(final["duplicates"]),
            "samples": samples,
            "wall": time.monotonic() - t0,
        }
        self.log(
            f"S3: delivered {delivered:,} (lost {lost:,}, dup {r['duplicates']:,}); "
            f"reconnect {r['reconnect_seconds'] or 0:.1f} s, drain {r['drain_rate']:,.0f}/s"
        )
        stuck = max(0, int(gen["acked"]) - depth)
        if lost > stuck or r["duplicates"]:
            self.problem(
                "S3",
                f"{lost - stuck:,} events queued at node A were not delivered and "
                f"{r['duplicates']:,} were duplicated after the peer came back",
                run=run,
            )
        r["never_reached_node_a"] = stuck
        return r

    async def _s3_evidence(self, system: GatewayNats, run: int) -> str:
        """Node A stalled while queueing: its stacks, stats, logs and MQTT socket queues."""
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = self.evidence_dir / f"s3-run{run}-node-a-stalled.txt"
        node = system.nodes["node A"]
        parts = [f"node A pid {node.pid}, RSS {rss_bytes(node.pid) / 2**20:.0f} MB"]
        for i in range(3):
            dump = await asyncio.to_thread(_py_spy_dump, node.pid)
            parts.append(f"===== py-spy dump {i + 1} of 3\n{dump}")
            await asyncio.sleep(1.0)
        try:
            stats = await asyncio.to_thread(node.stats)
            parts.append(
                "===== /api/stats\n"
                + json.dumps({k: stats.get(k) for k in ("brokers", "outboxes")}, indent=1)
            )
        except Exception as exc:
            parts.append(f"===== /api/stats failed: {exc}")
        port = system.brokers["mosquitto A"].port
        ss = await asyncio.to_thread(
            subprocess.run,
            ["ss", "-tn", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True,
            text=True,
            check=False,
        )
        parts.append(f"===== TCP sockets to Mosquitto A (Recv-Q, Send-Q)\n{ss.stdout}")
        for role in ("node A", "mosquitto A"):
            log = system.logs()[role]
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"===== {role} log (last 60 lines)\n" + "\n".join(text.splitlines()[-60:]))
        path.write_text("\n\n".join(parts) + "\n")
        return str(path.relative_to(self.results_dir))

    # -- S4 ----------------------------------------------------------------------------

    async def s4_idle(self) -> None:
        """A node with three bridges (MQTT, NATS, HTTP) and two peers, doing nothing."""
        for run in range(1, self.s.s4_runs + 1):
            wd = self.workdir / f"s4-run{run}"
            brokers: list[Mosquitto | NatsServer] = []
            nodes: list[NodeProcess] = []
            try:
                mq = new_mosquitto(wd / "mosquitto")
                nt = NatsServer(workdir=wd / "nats")
                for b in (mq, nt):
                    await asyncio.to_thread(b.start)
                    brokers.append(b)
                peers = []
                for pid in ("peer-1", "peer-2"):
                    p = NodeProcess(wd / pid, _peer_config(pid))
                    await asyncio.to_thread(p.start)
                    nodes.append(p)
                    peers.append(p)
                main = NodeProcess(wd / "idle", _idle_config(mq.port, nt.port, peers))
                await asyncio.to_thread(main.start)
                nodes.append(main)
                await asyncio.to_thread(main.wait_peers, {"peer-1", "peer-2"})
                await asyncio.sleep(5.0)  # let start-up work settle
                pids = {"idle node": main.pid, "peer-1": peers[0].pid, "peer-2": peers[1].pid}
                c0 = {k: cpu_seconds(p) for k, p in pids.items()}
                t0 = time.monotonic()
                await asyncio.sleep(self.s.s4_idle_seconds)
                dt = time.monotonic() - t0
                c1 = {k: cpu_seconds(p) for k, p in pids.items()}
                r = {
                    "run": run,
                    "seconds": dt,
                    "cpu_percent": {k: 100 * (c1[k] - c0[k]) / dt for k in pids},
                    "rss": {k: rss_bytes(p) for k, p in pids.items()},
                    "peers_up": sorted(main.peers_up()),
                }
                self.results["s4"]["idle"].append(r)
                self.log(
                    f"S4 idle run {run}: {r['cpu_percent']['idle node']:.2f} % of a core, "
                    f"RSS {r['rss']['idle node'] / 2**20:.0f} MB"
                )
            except Exception as exc:
                self.problem("idle", f"S4 idle: {type(exc).__name__}: {exc}", run=run)
            finally:
                for node in reversed(nodes):
                    killed = node.killed
                    await asyncio.to_thread(node.stop)
                    if node.killed > killed:
                        self.problem("idle", f"{node.node_id} ignored SIGTERM", run=run)
                    self._scan_log("S4 idle", node.node_id, node.log)
                for b in reversed(brokers):
                    await asyncio.to_thread(b.stop)

    # -- profile -----------------------------------------------------------------------

    async def profile(self, key: str = "a") -> None:
        """py-spy on both nodes of (a), or of (b) when (a) is not measured, during an
        S1-style trial: flame graphs, then raw stacks."""
        system = make_system(key, self.workdir / "profile")
        out: dict[str, Any] = {}
        try:
            await self._start(system)
            for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
                files = {
                    role: self.results_dir / f"profile-{role.replace(' ', '-').lower()}.{ext}"
                    for role in ("node A", "node B")
                }

                async def spies(files: dict[str, Path] = files, fmt: str = fmt) -> list[Any]:
                    return [
                        await spawn_py_spy(
                            system.nodes[role].pid, path, fmt, self.workdir / f"py-spy-{fmt}.log"
                        )
                        for role, path in files.items()
                    ]

                r = await self._trial(system, self._s1_spec(), 0, f"profile {fmt}", spies)
                out[fmt] = {
                    "trial": {k: r.get(k) for k in _SUMMARY_KEYS},
                    "files": {k: v.name for k, v in files.items() if v.exists()},
                }
                missing = [k for k, v in files.items() if not v.exists()]
                if missing:
                    log = self.workdir / f"py-spy-{fmt}.log"
                    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                    out[fmt]["error"] = f"py-spy wrote nothing for {missing}: {tail}"
                    self.problem(key, f"profile {fmt}: py-spy failed for {missing}", tail)
            for role in ("node A", "node B"):
                path = self.results_dir / f"profile-{role.replace(' ', '-').lower()}.txt"
                if path.exists():
                    out.setdefault("summary", {})[role] = summarize(path)
        except Exception as exc:
            self.problem(key, f"profile: {type(exc).__name__}: {exc}")
            out["error"] = str(exc)
        finally:
            await self._stop(system, None, f"profile ({key})")
        out["system"] = key
        self.results["profile"] = out

    # -- logs --------------------------------------------------------------------------

    def _scan_log(self, key: str, role: str, path: Path) -> None:
        if not path.exists():
            return
        entry = (
            self.results["logs"]
            .setdefault(key, {})
            .setdefault(role, {"warnings": 0, "errors": 0, "samples": []})
        )
        for line in path.read_text(errors="replace").splitlines():
            kind = _log_kind(line)
            if kind is None:
                continue
            entry[kind] += 1
            text = _LOG_PREFIX.sub("", line.strip())[:300]
            if len(entry["samples"]) < 8 and text not in entry["samples"]:
                entry["samples"].append(text)


_SUMMARY_KEYS = (
    "system",
    "acked",
    "delivered",
    "lost",
    "lost_sample",
    "duplicates",
    "delivered_rate",
    "sink_closed",
    "wall",
)

_BENIGN = ("should not be run as root",)
# Timestamps: mesh's "2026-01-01 12:00:00,123 ", Mosquitto's "1767225600: ",
# nats-server's "[123] 2026/01/01 12:00:00.123456 ".
_LOG_PREFIX = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ |\d+: |\[\d+\] \d{4}/\d\d/\d\d \S+ )"
)


def _log_kind(line: str) -> str | None:
    if any(b in line for b in _BENIGN):
        return None
    if " ERROR " in line or "Traceback" in line or "Error:" in line or "[ERR]" in line:
        return "errors"
    if (
        " WARNING " in line
        or "Warning:" in line
        or "[WRN]" in line
        or "dropped" in line
        or "Slow Consumer" in line
    ):
        return "warnings"
    return None


def _py_spy_dump(pid: int) -> str:
    exe = Path(sys.executable).parent / "py-spy"
    try:
        out = subprocess.run(
            [str(exe), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy dump failed: {exc}"
    return out.stdout + out.stderr


def _peer_depth(node: NodeProcess, peer: str) -> int:
    try:
        stats = node.stats()
    except Exception:
        return 0
    for ob in stats.get("outboxes", []):
        if ob["name"] == f"peer:{peer}":
            return int(ob["depth"])
    return 0


def _peer_config(node_id: str) -> dict[str, Any]:
    return {
        "node": {"id": node_id},
        "brokers": {"web": {"kind": "http"}},
        "accept": [{"id": "idle", "token": TOKEN}],
        "ingress": [{"from": "web", "topic": f"{node_id}/#"}],
        "egress": [
            {"to": "web", "topic": f"idle/{node_id}/#", "target": "http://127.0.0.1:9/hook"}
        ],
    }


def _idle_config(mqtt_port: int, nats_port: int, peers: list[NodeProcess]) -> dict[str, Any]:
    return {
        "node": {"id": "idle"},
        "brokers": {
            "plant": {"kind": "mqtt", "url": f"mqtt://127.0.0.1:{mqtt_port}"},
            "bus": {"kind": "nats", "url": f"nats://127.0.0.1:{nats_port}"},
            "web": {"kind": "http"},
        },
        "peers": [
            {"id": p.node_id, "url": f"ws://127.0.0.1:{p.port}/mesh", "token": TOKEN} for p in peers
        ],
        "ingress": [
            {"from": "plant", "topic": "idle/mqtt/#"},
            {"from": "bus", "topic": "idle.nats.>"},
            {"from": "web", "topic": "idle/http/#"},
        ],
        "egress": [
            {"to": "plant", "topic": "peer-1/#", "target": "out/{topic}", "mode": "structured"},
            {"to": "bus", "topic": "peer-2/#", "target": "out.peer2", "mode": "binary"},
            {"to": "web", "topic": "peer-1/#", "target": "http://127.0.0.1:9/hook"},
        ],
    }
