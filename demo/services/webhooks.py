"""Warehouse: the shipping and invoice services, behind webhooks.

    shipping: OrderConfirmed     -> ShipmentPrepared
              ShipmentPrepared   -> ShipmentDispatched
              ShipmentDispatched -> ShipmentDelivered
    invoice:  ShipmentDispatched -> (an invoice)

Each receives CloudEvents as webhooks from its site's node and posts new events
back to that node's HTTP ingress, POST /events/<topic> (binary mode), with
``--token`` as a bearer token when the node is on another host (compose).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import aiohttp
from aiohttp import web

from demo.services.common import TYPE_PREFIX, Status, base_args, new_id, now

NEXT = {
    "order-confirmed": ("ShipmentPrepared", "shipment-prepared"),
    "shipment-prepared": ("ShipmentDispatched", "shipment-dispatched"),
    "shipment-dispatched": ("ShipmentDelivered", "shipment-delivered"),
}


async def run(
    service: str, port: int, node: str, status: Status, bind: str, token: str | None
) -> None:
    session = aiohttp.ClientSession()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    pending: set[asyncio.Task[None]] = set()

    async def emit(subject: str, out_type: str, topic: str, body: bytes) -> None:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": new_id(),
            "ce-source": "/warehouse/shipping",
            "ce-type": TYPE_PREFIX + out_type,
            "ce-subject": subject,
            "ce-time": now(),
            "content-type": "application/json",
            **auth,
        }
        for attempt in range(50):
            try:
                async with session.post(
                    f"{node}/events/retail/{topic}", data=body, headers=headers
                ) as resp:
                    if resp.status == 202:
                        status.inc(f"out.{out_type}")
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))

    async def hook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        if service == "invoice":
            if request.content_type.startswith("application/cloudevents"):
                status.inc("invoices")
            return web.Response(status=204)
        status.inc(f"in.{name}")
        subject = request.headers.get("ce-subject", "")
        if name in NEXT:
            out_type, topic = NEXT[name]
            task = asyncio.create_task(emit(subject, out_type, topic, body))
            pending.add(task)
            task.add_done_callback(pending.discard)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{name}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, bind, port).start()
    status.set("ready", True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        status.write()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    if pending:
        await asyncio.wait(pending, timeout=5)
    status.write()
    await runner.cleanup()
    await session.close()


def main() -> None:
    p = base_args(__doc__ or "")
    p.add_argument("service", choices=["shipping", "invoice"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--node", required=True, help="the warehouse node's URL")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument(
        "--token",
        default=os.environ.get("MESH_API_TOKEN"),
        help="bearer token with 'publish' (default: $MESH_API_TOKEN); a node on the same "
        "host without api.tokens needs none",
    )
    args = p.parse_args()
    asyncio.run(
        run(
            args.service,
            args.port,
            args.node.rstrip("/"),
            Status(args.status_dir, args.service),
            args.bind,
            args.token,
        )
    )


if __name__ == "__main__":
    main()
