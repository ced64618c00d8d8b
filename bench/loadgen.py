"""The load generator: one process, the same code for every system under test.

``python -m bench.loadgen --proto mqtt --port P --topic T --run R --count N``
publishes ``N`` 256-byte JSON payloads (see :mod:`bench.proto`) and prints
one JSON line with what it did; the bitmap of confirmed sequence numbers
(one byte per message) goes to ``--out``.

- ``--proto mqtt``: MQTT 3.1.1, QoS 1; a message is *sent* once the broker
  returned its PUBACK.
- ``--proto nats``: core NATS ``PUB``; a batch counts as sent once the
  server answered the ``PING`` that follows it (core NATS has no per-message
  acknowledgement; this is the strongest confirmation it offers).

``--rate 0`` is closed loop: as fast as the window of ``--window``
unconfirmed messages allows. Any other rate is an open-loop schedule.
``--e2e-window N --progress FILE`` closes the loop end to end as well: the
generator stays at most ``N`` events ahead of the highest sequence number
the sink reports in ``FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from bench.proto import MqttPublisher, NatsPublisher, Publisher, open_progress

__all__ = ["main", "publish"]


async def publish(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    capacity = args.start + args.count
    pub: Publisher
    if args.proto == "mqtt":
        pub = MqttPublisher(args.topic, args.run, capacity, args.window)
    else:
        pub = NatsPublisher(args.topic, args.run, capacity, args.window)
    cpu0 = time.process_time()
    await loop.create_connection(lambda: pub, args.host, args.port)
    await pub.ready()
    progress = open_progress(args.progress, create=False) if args.progress else None
    stats = await pub.run(
        args.count,
        args.rate,
        args.duration,
        start_seq=args.start,
        e2e_window=args.e2e_window,
        progress=progress,
    )
    await pub.wait_confirmed(args.ack_timeout)
    pub.close()
    cpu = time.process_time() - cpu0
    if args.out:
        await asyncio.to_thread(Path(args.out).write_bytes, bytes(pub.acked_map))
    span = max(stats.last_send - stats.first_send, 1e-9)
    return {
        "sent": stats.sent,
        "acked": stats.acked,
        "unconfirmed": pub.inflight,
        "first_send": stats.first_send,
        "last_send": stats.last_send,
        "last_ack": stats.last_ack,
        "send_rate": stats.sent / span,
        "ack_rate": stats.acked / max(stats.last_ack - stats.first_send, 1e-9),
        "max_lag": stats.max_lag,
        "final_lag": stats.final_lag,
        "window_waits": stats.window_waits,
        "e2e_waits": stats.e2e_waits,
        "errors": stats.errors,
        "cpu_seconds": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--proto", choices=["mqtt", "nats"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", required=True, help="MQTT topic or NATS subject")
    p.add_argument("--run", required=True, help="trial id embedded in every payload")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--start", type=int, default=0, help="first sequence number")
    p.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = closed loop")
    p.add_argument("--duration", type=float, default=60.0, help="stop sending after S seconds")
    p.add_argument("--window", type=int, default=1000, help="unconfirmed messages in flight")
    p.add_argument("--ack-timeout", type=float, default=60.0)
    p.add_argument(
        "--e2e-window",
        type=int,
        default=0,
        help="at most N events ahead of the highest one the sink has received (needs --progress)",
    )
    p.add_argument("--progress", help="the sink's progress file (see bench.sink --progress)")
    p.add_argument("--out", help="file for the bitmap of confirmed sequence numbers")
    args = p.parse_args(argv)
    try:
        result = asyncio.run(publish(args))
    except (OSError, ConnectionError, TimeoutError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
