"""PNG charts of a benchmark run (matplotlib, Agg backend)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["write_charts"]

COLORS = {
    "a": "#1f77b4",
    "b": "#6baed6",
    "c": "#d62728",
    "d": "#ff7f0e",
    "e": "#2ca02c",
    "ref-mqtt": "#7f7f7f",
    "ref-nats": "#bcbd22",
}


def _ok(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if "error" not in t]


def _s1(results: dict[str, Any], labels: dict[str, str], out: Path) -> str | None:
    keys = [k for k in results["s1"] if _ok(results["s1"][k])]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(keys) + 1.8))
    for i, k in enumerate(keys):
        rates = [t["delivered_rate"] for t in _ok(results["s1"][k])]
        med = statistics.median(rates)
        lost = sum(t["lost"] for t in _ok(results["s1"][k]))
        sent = sum(t["acked"] for t in _ok(results["s1"][k]))
        ax.barh(
            i,
            med,
            xerr=[[med - min(rates)], [max(rates) - med]],
            color=COLORS.get(k, "#999"),
            hatch="//" if lost else None,
            edgecolor="black" if lost else None,
            capsize=4,
        )
        note = f" {med:,.0f}/s"
        if lost:
            note += f"  LOST {lost:,} of {sent:,} ({100 * lost / max(sent, 1):.1f} %)"
        ax.text(max(rates) * 1.05, i, note, va="center", fontsize=8)
    ax.set_yticks(range(len(keys)), [f"({k}) {labels.get(k, k)}" for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 8)
    ax.set_xlabel("delivered events/s (log scale); bar = median, whiskers = min-max over runs")
    ax.set_title("S1 throughput: closed loop, QoS 1, 256-byte JSON (hatched: lost messages)")
    fig.tight_layout()
    path = out / "s1_throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _s2(results: dict[str, Any], labels: dict[str, str], out: Path) -> str | None:
    s2 = results["s2"]
    if not s2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, metric in zip(axes, ("p50", "p99", "max"), strict=True):
        for k, by_rate in s2.items():
            xs, ys, lo, hi = [], [], [], []
            for rate in sorted(by_rate, key=int):
                vals = [t["latency_ms"][metric] for t in _ok(by_rate[rate]) if t["latency_ms"]]
                if not vals:
                    continue
                m = statistics.median(vals)
                xs.append(int(rate))
                ys.append(m)
                lo.append(m - min(vals))
                hi.append(max(vals) - m)
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi],
                    marker="o",
                    capsize=3,
                    label=f"({k}) {labels.get(k, k)}",
                    color=COLORS.get(k),
                )
        if metric == "p99":
            ax.axhline(10, ls="--", color="grey", lw=1)
            ax.text(1000, 11, "10 ms (acceptance for (a) at 5k/s)", fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1000, 5000, 10000], ["1k", "5k", "10k"])
        ax.set_xlabel("offered events/s")
        ax.set_title(f"{metric} latency")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (log); median, whiskers min-max over runs")
    axes[0].legend(fontsize=7)
    fig.suptitle("S2 latency at fixed offered rates (open loop, QoS 1)")
    fig.tight_layout()
    path = out / "s2_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _s3(results: dict[str, Any], out: Path) -> str | None:
    runs = [r for r in results["s3"] if r.get("samples")]
    if not runs:
        return None
    r = runs[-1]
    q = [s for s in r["samples"] if s["phase"] == "queue"]
    d = [s for s in r["samples"] if s["phase"] == "drain"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    if q:
        ax1.plot([s["depth"] for s in q], [s["rss"] / 2**20 for s in q], label="node A RSS (MB)")
        ax1.plot([s["depth"] for s in q], [s["disk"] / 2**20 for s in q], label="data_dir (MB)")
        ax1.set_xlabel("events queued for the down peer")
        ax1.set_ylabel("MB")
        ax1.set_title(f"S3 backlog: memory and disk while queueing (run {r['run']})")
        ax1.legend(fontsize=8)
        ax1.grid(True, alpha=0.3)
    if d:
        t0 = d[0]["t"]
        ax2.plot([s["t"] - t0 for s in d], [s["delivered"] for s in d], label="delivered at B")
        ax2b = ax2.twinx()
        ax2b.plot(
            [s["t"] - t0 for s in d],
            [s["rss"] / 2**20 for s in d],
            color="grey",
            ls="--",
            label="node A RSS (MB)",
        )
        ax2b.set_ylabel("node A RSS (MB)")
        ax2.set_xlabel("seconds since node B was restarted")
        ax2.set_ylabel("events delivered")
        ax2.set_title("S3 drain after the peer came back")
        ax2.grid(True, alpha=0.3)
        ax2.legend(loc="upper left", fontsize=8)
        ax2b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "s3_backlog.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _s4(results: dict[str, Any], labels: dict[str, str], out: Path) -> str | None:
    keys = [k for k in results["s1"] if _ok(results["s1"][k])]
    if not keys:
        return None
    roles: list[str] = []
    per: dict[str, dict[str, float]] = {}
    for k in keys:
        per[k] = {}
        trials = _ok(results["s1"][k])
        for role in trials[0]["cpu_seconds"]:
            vals = [
                1e5 * t["cpu_seconds"].get(role, 0.0) / t["delivered"]
                for t in trials
                if t["delivered"]
            ]
            if vals:
                per[k][role] = statistics.median(vals)
                if role not in roles:
                    roles.append(role)
    fig, ax = plt.subplots(figsize=(11.5, 4.5))
    bottom = [0.0] * len(keys)
    cmap = plt.get_cmap("tab20")
    for j, role in enumerate(roles):
        vals = [per[k].get(role, 0.0) for k in keys]
        ax.bar(range(len(keys)), vals, bottom=bottom, label=role, color=cmap(j % 20))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(keys)), [f"({k})\n{labels.get(k, k)}" for k in keys], fontsize=7)
    ax.set_ylabel("CPU seconds per 100k delivered events")
    ax.set_title("S4 cost: CPU per 100k events by process (median of S1 runs)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out / "s4_cpu.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_charts(results: dict[str, Any], labels: dict[str, str], out: Path) -> list[str]:
    """Write every chart the results allow; return the file names."""
    out.mkdir(parents=True, exist_ok=True)
    made = [_s1(results, labels, out), _s2(results, labels, out), _s3(results, out)]
    made.append(_s4(results, labels, out))
    return [m for m in made if m]
