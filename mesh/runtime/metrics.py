"""Counters, gauges and histograms: JSON (``/api/stats``) and Prometheus text (``/metrics``).

Every deliberate drop and every rejection has a counter here, labelled with
the reason, so nothing the node discards is silent. Every family has a HELP
line (:data:`HELP`; a name missing from it is a bug the tests catch), and its
labels are operator names: a broker, a peer, an egress rule's ``name``, an
outbox (``egress:<rule name>``, ``peer:<id>``), a reason from a fixed set —
never a value taken from an event.

Counting stays on the hot path as a dict increment; the text exposition is
prometheus-client's, built only when ``/metrics`` is scraped (a collector over
these tables, so the node keeps no second copy).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

__all__ = ["HELP", "HISTOGRAM_BUCKETS", "Metrics"]

Labels = tuple[tuple[str, str], ...]

HELP = {
    # ingress
    "mesh_ingress_events_total": "Events accepted from local brokers, by broker",
    "mesh_ingress_rejected_total": "Messages rejected at ingress, by broker and reason "
    "(invalid: not a valid event; too_large: over limits.max_event_size; no_rule: no "
    "ingress rule matches its topic; schema: its data fails a JSON Schema of schemas:, or is "
    "not JSON where a schema applies)",
    "mesh_ingress_dropped_total": "Messages a broker client dropped before the node saw them, "
    "by broker and reason (slow consumer: the NATS client's pending buffer overflowed)",
    "mesh_unrouted_events_total": "Events that matched no subscription and were not forwarded",
    # links
    "mesh_link_up": "1 while the peer link is established",
    "mesh_link_canary_ok": "1 while the peer answers canaries (routed and committed at the "
    "peer) within three node.canary_interval; 0 while the link is degraded or down",
    "mesh_link_rtt_seconds": "Round trip of a link canary: sent, queued behind the peer's "
    "batches, committed to its store, answered",
    "mesh_link_degraded_total": "Times a link went degraded (canaries unanswered), by peer",
    "mesh_link_sessions_total": "Link sessions established, by peer",
    "mesh_link_sent_events_total": "Events sent over a peer link",
    "mesh_link_received_events_total": "Events received over a peer link",
    "mesh_link_duplicates_total": "Events dropped as duplicates by (source, id), by peer "
    "(local: from this node's own ingress)",
    "mesh_link_refused_total": "Link hellos refused, by reason (the first word of the reason "
    "sent to the dialer: busy, token, unknown, ...; by peer: the peer refused ours)",
    "mesh_link_protocol_errors_total": "Links closed because the peer broke the link protocol",
    "mesh_link_denied_events_total": "Events dropped at a peer link by our rules for the peer: "
    "direction import (outside what we take from it) or export (queued, outside what it "
    "may receive from us)",
    "mesh_link_forged_events_total": "Events dropped at a peer link because their origin is "
    "neither the peer nor a node it announced behind it, by peer and reason",
    "mesh_link_closed_by_reload_total": "Accepted links closed by a reload because their "
    "id or token is no longer accepted, by peer",
    "mesh_catalog_types_dropped_total": "Events not recorded in the event catalog because it "
    "holds its most types already (a thousand)",
    "mesh_catalog_refused_total": "Catalog entries from a peer not taken, by peer and reason "
    "(malformed, path, limit)",
    "mesh_interests_refused_total": "Interests from a peer not installed, by peer and reason "
    "(malformed, pattern, filter, path, export, limit)",
    # egress
    "mesh_egress_events_total": "Events confirmed by a local broker, by egress rule name",
    "mesh_egress_failures_total": "Failed publish attempts, by egress rule name",
    "mesh_egress_paused_total": "Times an egress rule paused on errors (on_error.then: pause)",
    "mesh_discarded_total": "Events discarded after failed retries (on_error.then: discard), "
    "by egress rule name",
    "mesh_event_latency_seconds": "From an event's arrival at its ingress node to the local "
    "broker's confirmation at egress, across nodes (the ingress time travels with the "
    "event; node clocks must agree), by egress rule name",
    # outboxes, store, dead letters
    "mesh_outbox_depth": "Events waiting in an outbox",
    "mesh_outbox_bytes": "Bytes waiting in an outbox",
    "mesh_outbox_oldest_seconds": "Age of the oldest event waiting in an outbox (0 when empty)",
    "mesh_backpressure_total": "Routing attempts refused because an outbox with overflow: "
    "block was full, by outbox",
    "mesh_store_full": "1 while the disk of the store is full and new events wait for room",
    "mesh_dead_letters_total": "Events sent to the dead-letter queue, by reason",
    "mesh_dead_letters_evicted_total": "Dead letters evicted by the queue's bounds "
    "(dlq.max_age, dlq.max_bytes), by reason",
    "mesh_redriven_total": "Dead letters put back into an outbox by a redrive",
    # brokers, HTTP, TLS, tasks
    "mesh_broker_up": "1 while the bridge to the broker is connected and subscribed",
    "mesh_api_refused_total": "HTTP requests refused for a missing or wrong token or a "
    "non-loopback client, by status and path (/events or /api)",
    "mesh_http_refused_total": "HTTP connections or requests refused by a limit: "
    "header_timeout (slowloris), body_timeout, busy (too many pending connections), "
    "malformed (a request that cannot be parsed)",
    "mesh_tls_handshake_failures_total": "TLS handshakes on the node's listener that failed, "
    "by reason (no_certificate, unknown_ca, bad_certificate, protocol, aborted, other)",
    "mesh_task_restarts_total": "Supervised tasks restarted after a fault, by task",
    "mesh_tail_dropped_total": "Events not shown to a `mesh tail` client that fell behind",
}

# Seconds. Link RTTs and event latencies on one host sit in the low milliseconds;
# across sites and under load they reach seconds.
HISTOGRAM_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class _Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(HISTOGRAM_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(HISTOGRAM_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self.counters: defaultdict[tuple[str, Labels], int] = defaultdict(int)
        self.gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.histograms: dict[tuple[str, Labels], _Histogram] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += n

    def get(self, name: str, **labels: str) -> int:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def gauge(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges[name] = read

    def histogram(self, name: str, **labels: str) -> _Histogram:
        key = (name, tuple(sorted(labels.items())))
        h = self.histograms.get(key)
        if h is None:
            h = self.histograms[key] = _Histogram()
        return h

    def observe(self, name: str, value: float, **labels: str) -> None:
        self.histogram(name, **labels).observe(value)

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for (name, labels), value in sorted(self.counters.items()):
            out.setdefault(name, []).append({"labels": dict(labels), "value": value})
        for name, read in self.gauges.items():
            for labels, reading in sorted(read().items()):
                out.setdefault(name, []).append({"labels": dict(labels), "value": reading})
        for (name, labels), h in sorted(self.histograms.items()):
            out.setdefault(name, []).append(
                {"labels": dict(labels), "count": h.count, "sum": round(h.sum, 6)}
            )
        return out

    def prometheus(self) -> str:
        return generate_latest(self._registry).decode()


class _Collector:
    """Families built from the node's tables at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        families: dict[str, Metric] = {}

        def family(name: str, kind: str) -> Metric:
            fam = families.get(name)
            if fam is None:
                base = name.removesuffix("_total") if kind == "counter" else name
                fam = families[name] = Metric(base, HELP.get(name, name), kind)
            return fam

        # Every counter this node can count, even before it has counted one.
        for name in HELP:
            if name.endswith("_total"):
                family(name, "counter")
        for (name, labels), value in sorted(m.counters.items()):
            family(name, "counter").add_sample(name, dict(labels), value)
        for name, read in m.gauges.items():
            fam = family(name, "gauge")
            for labels, reading in sorted(read().items()):
                fam.add_sample(name, dict(labels), reading)
        for (name, labels), h in sorted(m.histograms.items()):
            fam = family(name, "histogram")
            _histogram_samples(fam, name, dict(labels), h)
        yield from families.values()


def _histogram_samples(fam: Metric, name: str, labels: dict[str, str], h: _Histogram) -> None:
    cumulative = 0
    bounds: Sequence[float | str] = (*HISTOGRAM_BUCKETS, "+Inf")
    for bound, n in zip(bounds, h.counts, strict=True):
        cumulative += n
        le = bound if isinstance(bound, str) else _float(bound)
        fam.add_sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
    fam.add_sample(f"{name}_count", labels, h.count)
    fam.add_sample(f"{name}_sum", labels, h.sum)


def _float(v: float) -> str:
    return repr(float(v))
