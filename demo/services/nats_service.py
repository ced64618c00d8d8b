"""Core: the payment, orders and monitoring services, on NATS (binary CloudEvents).

payment:  OrderRequested      -> PaymentProcessed
orders:   PaymentProcessed    -> OrderConfirmed
          ShipmentDelivered   -> OrderCompleted
monitor:  counts device telemetry from every site, and the audited orders
          (the core node's transform of OrderConfirmed)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import nats
from nats.aio.msg import Msg

from demo.services.common import TYPE_PREFIX, Status, base_args, new_id, now

FLOWS = {
    "payment": {"order-requested": ("PaymentProcessed", "payment-processed")},
    "orders": {
        "payment-processed": ("OrderConfirmed", "order-confirmed"),
        "shipment-delivered": ("OrderCompleted", "order-completed"),
    },
}


async def run(service: str, url: str, status: Status) -> None:
    nc = await nats.connect(url, name=f"demo-{service}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if service == "monitor":
        seen: set[str] = set()

        async def telemetry(msg: Msg) -> None:
            seen.add((msg.headers or {}).get("ce-id", ""))
            status.set("telemetry", len(seen))

        await nc.subscribe("core.telemetry.>", cb=telemetry)
        audited: set[str] = set()

        async def audit(msg: Msg) -> None:
            if (msg.headers or {}).get("ce-type") == TYPE_PREFIX + "OrderAudited":
                audited.add(msg.subject)
            status.set("audited", len(audited))

        await nc.subscribe("core.audit.>", cb=audit)
    else:
        for incoming, (out_type, out_subject) in FLOWS[service].items():

            async def handle(
                msg: Msg, out_type: str = out_type, out_subject: str = out_subject
            ) -> None:
                h = msg.headers or {}
                status.inc(f"in.{h.get('ce-type', '?').removeprefix(TYPE_PREFIX)}")
                headers = {
                    "ce-specversion": "1.0",
                    "ce-id": new_id(),
                    "ce-source": f"/core/{service}",
                    "ce-type": TYPE_PREFIX + out_type,
                    "ce-subject": h.get("ce-subject", ""),
                    "ce-time": now(),
                    "ce-datacontenttype": "application/json",
                }
                await nc.publish(f"core.out.{out_subject}", msg.data, headers=headers)
                status.inc(f"out.{out_type}")

            await nc.subscribe(f"core.in.{incoming}", cb=handle)
    await nc.flush()
    status.set("ready", True)
    while not stop.is_set():
        status.write()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    status.write()
    await nc.drain()


def main() -> None:
    p = base_args(__doc__ or "")
    p.add_argument("service", choices=["payment", "orders", "monitor"])
    p.add_argument("--nats", required=True)
    args = p.parse_args()
    asyncio.run(run(args.service, args.nats, Status(args.status_dir, args.service)))


if __name__ == "__main__":
    main()
