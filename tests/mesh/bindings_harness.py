"""Two nodes with every ingress form at A and every egress form at B, real brokers.

Node A ingests from MQTT 5, MQTT 3.1.1 (same Mosquitto, two client sessions),
NATS and HTTP, and wraps raw payloads on ``raw/+``. Node B subscribes to all
of it (``#``) eight times: webhook binary and structured, MQTT 5 binary and
structured, MQTT 3.1.1 structured, NATS binary and structured, and data only
(NATS). What arrives is decoded with the project's codecs and compared, and
the wire metadata each plain client saw is kept for the test-side oracle
(tests.mesh.binding_oracle), which reads it by the binding specs instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mesh.core.codec import decode_http, decode_mqtt, decode_nats
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, node_config, unique, wait_for

TOKEN = "matrix-token"
EGRESS_FORMS = [
    "webhook-binary",
    "webhook-structured",
    "mqtt5-binary",
    "mqtt5-structured",
    "mqtt311-structured",
    "nats-binary",
    "nats-structured",
    "data",
]


@dataclass
class Arrival:
    form: str
    event: Event | None  # None for the data-only form
    payload: bytes
    # What the plain client saw besides the payload, for the oracle.
    content_type: str | None = None  # the MQTT 5 Content Type property
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # NATS and HTTP


@dataclass
class Harness:
    a: Node
    b: Node
    tag: str
    mqtt_a: MqttClient
    mqtt311_a: MqttClient
    nats_a: NATS
    arrivals: list[Arrival] = field(default_factory=list)

    @property
    def http_a(self) -> str:
        return f"http://127.0.0.1:{self.a.port}/events"

    def by_form(self) -> dict[str, list[Arrival]]:
        out: dict[str, list[Arrival]] = {f: [] for f in EGRESS_FORMS}
        for arr in self.arrivals:
            out[arr.form].append(arr)
        return out

    async def wait_arrivals(self, n_events: int, timeout: float = 20.0) -> None:
        want = n_events * len(EGRESS_FORMS)
        await wait_for(
            lambda: len(self.arrivals) >= want,
            timeout,
            f"{want} arrivals (have {len(self.arrivals)})",
        )
        await asyncio.sleep(0.3)  # anything extra would be a duplicate
        assert len(self.arrivals) == want, self.by_form()


@contextlib.asynccontextmanager
async def bindings_harness(
    tmp_path: Path, broker_a: Mosquitto, nats_a: NatsServer, broker_b: Mosquitto, nats_b: NatsServer
) -> AsyncIterator[Harness]:
    tag = unique("m")
    arrivals: list[Arrival] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        _mode, events = decode_http(headers, body)
        ev = events[0]
        assert isinstance(ev, Event)
        form = f"webhook-{request.match_info['mode']}"
        arrivals.append(Arrival(form, ev, body, headers=dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{mode}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink_port = runner.addresses[0][1]

    b_cfg = node_config(
        tmp_path,
        "site-b",
        brokers={
            "m5": {"kind": "mqtt", "url": broker_b.url, "protocol": 5},
            "m3": {"kind": "mqtt", "url": broker_b.url, "protocol": "3.1.1"},
            "bus": {"kind": "nats", "url": nats_b.url},
            "web": {"kind": "http"},
        },
        accept=[{"id": "site-a", "token": TOKEN}],
        egress=[
            {
                "to": "web",
                "topic": f"{tag}/#",
                "target": f"http://127.0.0.1:{sink_port}/binary",
                "mode": "binary",
            },
            {
                "to": "web",
                "topic": f"{tag}/#",
                "target": f"http://127.0.0.1:{sink_port}/structured",
                "mode": "structured",
            },
            {"to": "m5", "topic": f"{tag}/#", "target": f"{tag}/out/m5b", "mode": "binary"},
            {"to": "m5", "topic": f"{tag}/#", "target": f"{tag}/out/m5s", "mode": "structured"},
            {"to": "m3", "topic": f"{tag}/#", "target": f"{tag}/out/m3s", "mode": "structured"},
            {"to": "bus", "topic": f"{tag}/#", "target": f"{tag}.out.natsb", "mode": "binary"},
            {"to": "bus", "topic": f"{tag}/#", "target": f"{tag}.out.natss", "mode": "structured"},
            {"to": "bus", "topic": f"{tag}/#", "target": f"{tag}.out.data", "mode": "data"},
        ],
    )
    sub5 = MqttClient(broker_b.url)
    sub311 = MqttClient(broker_b.url, protocol="3.1.1")
    forms = {f"{tag}/out/m5b": "mqtt5-binary", f"{tag}/out/m5s": "mqtt5-structured"}

    def on_mqtt5(msg: Any) -> None:
        props = msg.properties
        ct = getattr(props, "ContentType", None)
        user = getattr(props, "UserProperty", None) or []
        ev = decode_mqtt(msg.payload, ct, user, "5")
        arrivals.append(Arrival(forms[msg.topic], ev, msg.payload, ct, list(user)))

    def on_mqtt311(msg: Any) -> None:
        ev = decode_mqtt(msg.payload, None, [], "3.1.1")
        arrivals.append(Arrival("mqtt311-structured", ev, msg.payload))

    sub5.client.message_callback_add(f"{tag}/out/+", lambda c, u, m: on_mqtt5(m))
    sub311.client.message_callback_add(f"{tag}/out/m3s", lambda c, u, m: on_mqtt311(m))
    sub5.subscribe(f"{tag}/out/m5b")
    sub5.subscribe(f"{tag}/out/m5s")
    sub311.subscribe(f"{tag}/out/m3s")
    sub5.client.on_message = lambda *a: None
    sub311.client.on_message = lambda *a: None

    nc_b = await nats.connect(nats_b.url)

    async def on_nats(msg: Msg) -> None:
        kind = msg.subject.rsplit(".", 1)[1]
        if kind == "data":
            arrivals.append(Arrival("data", None, msg.data))
        else:
            ev = decode_nats(msg.data, msg.headers)
            form = "nats-binary" if kind == "natsb" else "nats-structured"
            arrivals.append(Arrival(form, ev, msg.data, headers=dict(msg.headers or {})))

    await nc_b.subscribe(f"{tag}.out.>", cb=on_nats)
    await nc_b.flush()

    async with Node(b_cfg).serve() as b:
        a_cfg = node_config(
            tmp_path,
            "site-a",
            brokers={
                "m5": {"kind": "mqtt", "url": broker_a.url, "protocol": 5},
                "m3": {"kind": "mqtt", "url": broker_a.url, "protocol": "3.1.1"},
                "bus": {"kind": "nats", "url": nats_a.url},
                "web": {"kind": "http"},
            },
            peers=[{"id": "site-b", "url": f"ws://127.0.0.1:{b.port}/mesh", "token": TOKEN}],
            ingress=[
                {"from": "m5", "topic": f"{tag}/m5/#"},
                {
                    "from": "m5",
                    "topic": f"{tag}/raw/+",
                    "event": {
                        "type": "com.example.raw",
                        "source": "/devices/{1}",
                        "subject": "{1}",
                        "extensions": {"site": "a"},
                    },
                },
                {"from": "m3", "topic": f"{tag}/m3/#"},
                {"from": "bus", "topic": f"{tag}.nats.>"},
                {"from": "web", "topic": f"{tag}/http/#"},
            ],
        )
        async with Node(a_cfg).serve() as a:
            await a.ready()
            await b.ready()
            await wait_for(
                lambda: any(r.next_hop == "site-b" for r in a.table.routes()),
                what="B's interests at A",
            )
            mqtt_a = MqttClient(broker_a.url)
            mqtt311_a = MqttClient(broker_a.url, protocol="3.1.1")
            nc_a = await nats.connect(nats_a.url)
            try:
                yield Harness(a, b, tag, mqtt_a, mqtt311_a, nc_a, arrivals)
            finally:
                mqtt_a.close()
                mqtt311_a.close()
                await nc_a.close()
    await nc_b.close()
    sub5.close()
    sub311.close()
    await runner.cleanup()
