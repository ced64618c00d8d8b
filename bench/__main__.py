"""``python -m bench``: run the gateway beside the native bridges and write the report.

Starts every system itself on free loopback ports, measures S1-S4 (see
``bench/README.md``), and writes ``bench/results/report.md``, the charts
``bench/results/*.png``, the raw figures ``bench/results/results.json`` and
the py-spy profiles beside them. Work files (broker and node data, logs) go
to ``bench/results/work.tmp/`` and are removed at the end unless
``--keep-work`` is given. Every process it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.charts import write_charts
from bench.machine import machine_info, versions
from bench.report import render
from bench.scenarios import COMPARED, Bench, Settings
from bench.systems import SYSTEMS

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway beside a Mosquitto bridge and a NATS leafnode pair.",
    )
    p.add_argument(
        "--scenario",
        default="all",
        help="S1, S2, S3, S4, a comma-separated list of them, or all (default)",
    )
    p.add_argument("--runs", type=int, help="runs of S1/S2 (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small counts and short durations")
    p.add_argument(
        "--systems",
        default=",".join(COMPARED),
        help=f"systems for S1/S2, from {','.join(COMPARED)} (default: all five)",
    )
    p.add_argument("--s3-events", type=int, help="events queued in S3 (default 1,000,000)")
    p.add_argument("--s3-runs", type=int, help="runs of S3 (default 1: it takes minutes)")
    p.add_argument("--s4-runs", type=int, help="runs of S4's idle measurement (default 3)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--keep-work", action="store_true", help="keep logs and data of the run")
    p.add_argument(
        "--report-only", action="store_true", help="rebuild the report from results.json"
    )
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.quick_settings() if args.quick else Settings()
    scen = args.scenario.upper().replace(" ", "")
    s.scenarios = ["S1", "S2", "S3", "S4"] if scen == "ALL" else scen.split(",")
    bad = [x for x in s.scenarios if x not in ("S1", "S2", "S3", "S4")]
    if bad:
        raise SystemExit(f"unknown scenario(s): {', '.join(bad)}")
    s.systems = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = [k for k in s.systems if k not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(unknown)}")
    if args.runs is not None:
        s.runs = args.runs
    if args.s3_events is not None:
        s.s3_events = args.s3_events
    if args.s3_runs is not None:
        s.s3_runs = args.s3_runs
    if args.s4_runs is not None:
        s.s4_runs = args.s4_runs
    s.profile = not args.no_profile
    return s


def _write(results: dict[str, object], out: Path) -> None:
    labels = {k: cls.label for k, cls in SYSTEMS.items()}
    charts = write_charts(results, labels, out)
    (out / "report.md").write_text(render(results, charts))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        _write(results, out)
        print(f"wrote {out / 'report.md'}", file=sys.stderr)
        return 0
    settings = _settings(args)
    work = out / "work.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = datetime.datetime.now(datetime.UTC)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    t0 = time.monotonic()
    bench = Bench(settings, work, out)
    try:
        results = asyncio.run(bench.run())
    except KeyboardInterrupt:
        print("interrupted; writing what was measured", file=sys.stderr)
        results = bench.results
    results["meta"] = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - t0,
        "loadavg_start": load_start,
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "machine": machine_info(),
        "versions": versions(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _write(results, out)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / 'report.md'} in {(time.monotonic() - t0) / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
