"""Shop: IoT devices. Publish plain JSON telemetry (not CloudEvents) over MQTT;
the shop's node wraps each payload into a CloudEvent at the edge."""

from __future__ import annotations

import json
import random
import time

from demo.services.common import Status, base_args, stop_event
from demo.services.mqtt_client import connect


def main() -> None:
    p = base_args(__doc__ or "")
    p.add_argument("--mqtt", required=True)
    p.add_argument("--devices", type=int, default=5)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--count", type=int, default=0, help="readings per device; 0: no limit")
    args = p.parse_args()
    status = Status(args.status_dir, "devices")
    stop = stop_event()
    client = connect(args.mqtt, "devices")
    status.set("sent", 0)
    n = 0
    while not stop.is_set() and (args.count == 0 or n < args.count):
        n += 1
        for d in range(args.devices):
            reading = {
                "device": f"dev-{d}",
                "seq": n,
                "celsius": round(random.gauss(21, 2), 2),
                "ts": time.time(),
            }
            info = client.publish(f"devices/dev-{d}/telemetry", json.dumps(reading).encode(), qos=1)
            info.wait_for_publish(10)
            status.inc("sent")
        status.write()
        stop.wait(args.interval)
    status.set("done", True)
    status.write()
    stop.wait()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
