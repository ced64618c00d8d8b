"""Counters and gauges, exposed as JSON (``/api/stats``) and Prometheus text (``/metrics``).

Every deliberate drop and every rejection has a counter here, labelled with
the reason, so nothing the node discards is silent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

Labels = tuple[tuple[str, str], ...]

HELP = {
    "mesh_ingress_events_total": "Events accepted from local brokers, by broker",
    "mesh_ingress_rejected_total": "Messages rejected at ingress, by broker and reason "
    "(invalid: not a valid event; too_large: over limits.max_event_size; no_rule: no "
    "ingress rule matches its topic)",
    "mesh_unrouted_events_total": "Events that matched no subscription and were not forwarded",
    "mesh_link_sent_events_total": "Events sent over a peer link",
    "mesh_link_received_events_total": "Events received over a peer link",
    "mesh_link_duplicates_total": "Events dropped as duplicates by (source, id)",
    "mesh_egress_events_total": "Events confirmed by a local broker, by egress rule",
    "mesh_egress_failures_total": "Failed publish attempts, by egress rule",
    "mesh_dead_letters_total": "Events sent to the dead-letter queue, by reason",
    "mesh_dead_letters_evicted_total": "Dead letters evicted by the queue's bounds "
    "(dlq.max_age, dlq.max_bytes), by reason",
    "mesh_api_refused_total": "HTTP requests refused for a missing or wrong token or a "
    "non-loopback client, by status and path (/events or /api)",
    "mesh_outbox_depth": "Events waiting in an outbox",
    "mesh_outbox_bytes": "Bytes waiting in an outbox",
    "mesh_link_up": "1 when the peer link is established",
    "mesh_broker_up": "1 while the bridge to the broker is connected and subscribed",
    "mesh_link_denied_events_total": "Events dropped at a peer link by our rules for the peer: "
    "direction import (outside what we take from it) or export (queued, outside what it "
    "may receive from us)",
    "mesh_link_forged_events_total": "Events dropped at a peer link because their origin is "
    "neither the peer nor a node it announced behind it, by peer and reason",
    "mesh_interests_refused_total": "Interests from a peer not installed, by peer and reason "
    "(malformed, pattern, filter, path, export, limit)",
    "mesh_http_refused_total": "HTTP connections or requests refused by a limit: "
    "header_timeout (slowloris), body_timeout, busy (too many pending connections), "
    "malformed (a request that cannot be parsed)",
    "mesh_link_closed_by_reload_total": "Accepted links closed by a reload because their "
    "id or token is no longer accepted, by peer",
}


class Metrics:
    def __init__(self) -> None:
        self.counters: defaultdict[tuple[str, Labels], int] = defaultdict(int)
        self.gauges: dict[str, Callable[[], dict[Labels, float]]] = {}

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += n

    def get(self, name: str, **labels: str) -> int:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def gauge(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges[name] = read

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for (name, labels), value in sorted(self.counters.items()):
            out.setdefault(name, []).append({"labels": dict(labels), "value": value})
        for name, read in self.gauges.items():
            for labels, reading in sorted(read().items()):
                out.setdefault(name, []).append({"labels": dict(labels), "value": reading})
        return out

    def prometheus(self) -> str:
        lines: list[str] = []
        for name, series in self.snapshot().items():
            kind = "counter" if name.endswith("_total") else "gauge"
            if name in HELP:
                lines.append(f"# HELP {name} {HELP[name]}")
            lines.append(f"# TYPE {name} {kind}")
            for s in series:
                labels = s["labels"]
                assert isinstance(labels, dict)
                lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
                lines.append(f"{name}{{{lab}}} {s['value']}" if lab else f"{name} {s['value']}")
        return "\n".join(lines) + "\n"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
