"""The sink: one process per trial that counts what a system delivered.

``python -m bench.sink --proto mqtt --port P --topic T --run R --capacity N``
subscribes (MQTT 3.1.1 QoS 1, acknowledging each message, or core NATS) and
counts the trial's messages by sequence number: delivered once, duplicated,
and the latency of each first delivery (receive time minus the send time in
the payload). It talks to the orchestrator in JSON lines on stdout:

- ``{"ready": true}`` once the subscription is confirmed;
- ``{"probe": n}`` when warm-up probes arrive;
- ``{"progress": delivered, "duplicates": d, "t": now}`` about five times a second;
- ``{"closed": reason}`` if the server drops the connection;
- on ``stop`` (or end of input) on stdin: ``{"final": {...}}`` and exit.

The bitmap of delivered sequence numbers (one byte each) goes to ``--out``;
with ``--progress FILE`` the highest sequence number delivered and the count
are kept in ``FILE`` (16 bytes, shared memory) for the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.proto import MqttSubscriber, NatsSubscriber, SinkCounter, open_progress

__all__ = ["main", "quantiles"]

QUANTILES = (0.5, 0.9, 0.99, 0.999)


def quantiles(values: list[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max (and a 200-point CDF) of latencies in microseconds, as ms."""
    if not values:
        return {}
    s = sorted(values)
    n = len(s)
    out: dict[str, Any] = {f"p{q * 100:g}": s[min(n - 1, int(q * n))] / 1000 for q in QUANTILES}
    out["max"] = s[-1] / 1000
    out["min"] = s[0] / 1000
    out["mean"] = sum(s) / n / 1000
    out["cdf"] = [s[min(n - 1, int(i * n / 200))] / 1000 for i in range(200)] + [s[-1] / 1000]
    return out


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def sink(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    progress = open_progress(args.progress, create=True) if args.progress else None
    counter = SinkCounter(args.run, args.capacity, progress)
    sub: MqttSubscriber | NatsSubscriber
    if args.proto == "mqtt":
        sub = MqttSubscriber(args.topic, counter, f"bench-sink-{args.run}")
    else:
        sub = NatsSubscriber(args.topic, counter)
    cpu0 = time.process_time()
    await loop.create_connection(lambda: sub, args.host, args.port)
    await asyncio.wait_for(sub.subscribed, 10)
    _emit({"ready": True})

    probes_told = 0

    def on_probe() -> None:
        nonlocal probes_told
        if counter.probes > probes_told:
            probes_told = counter.probes
            _emit({"probe": counter.probes})

    sub.on_probe = on_probe
    stop = loop.create_future()

    def stdin_line() -> None:
        line = sys.stdin.readline()
        if (not line or line.strip() == "stop") and not stop.done():
            stop.set_result(None)

    loop.add_reader(sys.stdin.fileno(), stdin_line)
    closed_reason = None
    try:
        while not stop.done():
            done, _ = await asyncio.wait({stop, sub.closed}, timeout=0.2)
            if sub.closed in done and closed_reason is None:
                closed_reason = sub.closed.result()
                _emit({"closed": closed_reason})
                await stop
            _emit(
                {
                    "progress": counter.delivered,
                    "duplicates": counter.duplicates,
                    "t": time.monotonic(),
                }
            )
    finally:
        loop.remove_reader(sys.stdin.fileno())
        if sub.transport is not None:
            with contextlib.suppress(Exception):
                sub.transport.close()
    if args.out:
        await asyncio.to_thread(Path(args.out).write_bytes, bytes(counter.seen))
    timeline = sorted(counter.timeline.items())
    return {
        "delivered": counter.delivered,
        "duplicates": counter.duplicates,
        "foreign": counter.foreign,
        "out_of_range": counter.out_of_range,
        "probes": counter.probes,
        "first_recv": counter.first_recv,
        "last_recv": counter.last_recv,
        "latency_ms": quantiles(counter.latencies_us),
        "timeline": [[k / 10, v] for k, v in timeline],
        "closed": closed_reason,
        "errors": getattr(sub, "errors", []),
        "cpu_seconds": time.process_time() - cpu0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__)
    p.add_argument("--proto", choices=["mqtt", "nats"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--capacity", type=int, required=True, help="highest sequence number + 1")
    p.add_argument("--out", help="file for the bitmap of delivered sequence numbers")
    p.add_argument("--progress", help="file where the sink shares its progress with the generator")
    args = p.parse_args(argv)
    try:
        result = asyncio.run(sink(args))
    except (OSError, ConnectionError, TimeoutError) as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"final": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
