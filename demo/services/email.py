"""Shop: the e-mail notification service. Receives ShipmentDispatched (MQTT 5, binary)."""

from __future__ import annotations

from demo.services.common import TYPE_PREFIX, Status, base_args, stop_event
from demo.services.mqtt_client import connect, user_properties


def main() -> None:
    p = base_args(__doc__ or "")
    p.add_argument("--mqtt", required=True)
    args = p.parse_args()
    status = Status(args.status_dir, "email")
    stop = stop_event()
    status.set("emails", 0)

    def on_message(msg):  # type: ignore[no-untyped-def]
        if user_properties(msg).get("type") == TYPE_PREFIX + "ShipmentDispatched":
            status.inc("emails")

    client = connect(args.mqtt, "email", on_message, "shop/in/shipment-dispatched")
    status.set("ready", True)
    while not stop.wait(0.2):
        status.write()
    status.write()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
