"""Shop: the shopping cart. Emits OrderRequested (MQTT 5, structured CloudEvents)
and counts OrderCompleted coming back from the mesh."""

from __future__ import annotations

import json
import random
import time

from demo.services.common import TYPE_PREFIX, Status, base_args, new_id, now, stop_event
from demo.services.mqtt_client import connect, properties, user_properties


def main() -> None:
    p = base_args(__doc__ or "")
    p.add_argument("--mqtt", required=True)
    p.add_argument("--orders", type=int, default=20)
    p.add_argument("--rate", type=float, default=2.0, help="orders per second")
    args = p.parse_args()
    status = Status(args.status_dir, "cart")
    stop = stop_event()
    completed: set[str] = set()

    def on_message(msg):  # type: ignore[no-untyped-def]
        props = user_properties(msg)
        if props.get("type") == TYPE_PREFIX + "OrderCompleted":
            completed.add(props.get("subject", ""))
            status.set("completed", len(completed))

    client = connect(args.mqtt, "cart", on_message, "shop/in/order-completed")
    status.set("requested", 0)
    status.set("completed", 0)
    sent = 0
    next_at = time.monotonic()
    while not stop.is_set():
        if sent < args.orders and time.monotonic() >= next_at:
            order = f"order-{sent + 1:04d}"
            event = {
                "specversion": "1.0",
                "id": new_id(),
                "source": "/shop/cart",
                "type": TYPE_PREFIX + "OrderRequested",
                "subject": order,
                "time": now(),
                "datacontenttype": "application/json",
                "data": {
                    "order": order,
                    "items": random.randint(1, 5),
                    "total": round(random.uniform(5, 500), 2),
                },
            }
            info = client.publish(
                "shop/out/order-requested",
                json.dumps(event).encode(),
                qos=1,
                properties=properties("application/cloudevents+json"),
            )
            info.wait_for_publish(10)
            sent += 1
            status.set("requested", sent)
            next_at += 1 / args.rate
        status.write()
        stop.wait(0.05)
    status.write()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
