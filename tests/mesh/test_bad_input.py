"""Bad input is rejected with a reason that names the fault, and loses nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest
from nats.aio.msg import Msg

from mesh.core.codec import Mode, encode_http, encode_structured
from mesh.core.event import Event
from mesh.runtime.ingress import EXCERPT
from mesh.runtime.node import Node
from mesh.testing import Mosquitto, NatsServer
from tests.helpers import MqttClient, node_config, unique, wait_for

LIMIT = 64 * 1024


def event(n: int, **extra: Any) -> Event:
    return Event(
        {
            "specversion": "1.0",
            "id": f"e{n}",
            "source": "/bad-input",
            "type": "t",
            "subject": f"s{n}",
            **extra,
        },
        orjson.dumps({"n": n}),
    )


class Site:
    def __init__(self, node: Node, tag: str, received: list[Msg]) -> None:
        self.node = node
        self.tag = tag
        self.received = received

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}/events/{self.tag}"

    def subjects(self) -> set[str]:
        return {m.subject.rsplit(".", 1)[1] for m in self.received}


@pytest.fixture
async def site(
    tmp_path: Path, mosquitto: Mosquitto, nats_server: NatsServer
) -> AsyncIterator[Site]:
    tag = unique("bad")
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={
            "m5": {"kind": "mqtt", "url": mosquitto.url},
            "web": {"kind": "http"},
            "bus": {"kind": "nats", "url": nats_server.url},
        },
        ingress=[
            {"from": "m5", "topic": f"{tag}/#"},
            {"from": "bus", "topic": f"{tag}.>"},
            {"from": "web", "topic": f"{tag}/#"},
        ],
        egress=[{"to": "bus", "topic": f"{tag}/#", "target": f"out.{tag}.{{subject}}"}],
        limits={"max_event_size": LIMIT},
    )
    received: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        received.append(msg)

    nc = await nats.connect(nats_server.url)
    await nc.subscribe(f"out.{tag}.>", cb=on_msg)
    await nc.flush()
    async with Node(cfg).serve() as node:
        await node.ready()
        yield Site(node, tag, received)
    await nc.close()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers, skip_auto_headers=("Content-Type",)) as r,
    ):
        return r.status, (r.content_type, await r.json(content_type=None))


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (
            orjson.dumps({"specversion": "1.0", "id": "1", "type": "t"}),
            {"content-type": "application/cloudevents+json"},
            "missing required attribute 'source'",
        ),
        (b"{not json", {"content-type": "application/cloudevents+json"}, "JSON"),
        (
            b"{}",
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-bad_name": "x",
            },
            "invalid attribute name 'bad_name'",
        ),
        (
            b"{}",
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-subject": "%C0%A0",
            },
            "ce-subject",
        ),
        (
            b"{}",
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-subject": "50%",
            },
            "ce-subject",
        ),
        (
            orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "/s",
                    "type": "t",
                    "data": 1,
                    "data_base64": "AA==",
                }
            ),
            {"content-type": "application/cloudevents+json"},
            "data_base64",
        ),
    ],
    ids=["missing-source", "bad-json", "bad-name", "overlong-utf8", "bad-percent", "both-data"],
)
async def test_http_rejects_with_a_problem_naming_the_fault(
    site: Site, body: bytes, headers: dict[str, str], reason: str
) -> None:
    status, (ctype, problem) = await post(f"{site.url}/x", body, headers)
    assert status == 400
    assert ctype == "application/problem+json"
    assert reason in problem["detail"], problem
    assert site.node.metrics.get("mesh_ingress_rejected_total", broker="web", reason="invalid") == 1


async def test_http_oversize_event_is_413(site: Site) -> None:
    ev = Event.create("t", "/s", b"x" * (LIMIT + 1), datacontenttype="text/plain")
    headers, body = encode_http(ev, Mode.BINARY)
    status, (_ct, problem) = await post(f"{site.url}/big", body, headers)
    assert status == 413
    assert f"exceeds the limit of {LIMIT} bytes" in problem["detail"]
    # Its dead letter keeps a bounded excerpt and the size, not the whole body.
    [entry] = await site.node.store.dead_letters()
    assert entry.meta["size"] == len(body) and len(entry.record) == EXCERPT
    assert entry.record == body[:EXCERPT]


async def test_one_bad_event_in_a_batch_never_loses_the_others(site: Site) -> None:
    good1, good2 = encode_structured(event(1)), encode_structured(event(3))
    bad = orjson.dumps({"specversion": "1.0", "id": "e2", "source": "/s"})  # no type
    body = b"[" + b",".join([good1, bad, good2]) + b"]"
    status, (_ct, answer) = await post(
        f"{site.url}/batch", body, {"content-type": "application/cloudevents-batch+json"}
    )
    assert status == 207
    assert answer["accepted"] == ["e1", "e3"]
    assert answer["rejected"] == [
        {"index": 1, "reason": "batch element 1: missing required attribute 'type'"}
    ]
    await wait_for(lambda: site.subjects() == {"s1", "s3"}, what="the two good events")


async def test_mqtt_and_nats_rejections_are_counted_and_logged_with_the_reason(
    site: Site, mosquitto: Mosquitto, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.runtime.ingress")
    client = MqttClient(mosquitto.url)
    client.publish(
        f"{site.tag}/x", b"{broken", content_type="application/cloudevents+json"
    ).wait_for_publish(10)
    client.publish(f"{site.tag}/x", b"y" * (LIMIT + 1)).wait_for_publish(10)
    client.publish(
        f"{site.tag}/x", encode_structured(event(4)), content_type="application/cloudevents+json"
    ).wait_for_publish(10)
    nc = await nats.connect(nats_server.url)
    await nc.publish(
        f"{site.tag}.x", b"{}", headers={"ce-specversion": "1.0", "ce-id": "9", "ce-source": "/s"}
    )
    await nc.publish(
        f"{site.tag}.x",
        encode_structured(event(5)),
        headers={"content-type": "application/cloudevents+json"},
    )
    await nc.flush()
    await nc.close()
    # The good messages after the bad ones still arrive.
    await wait_for(lambda: site.subjects() == {"s4", "s5"}, what="the good events")
    m = site.node.metrics
    await wait_for(
        lambda: m.total("mesh_ingress_rejected_total") == 3, what="two MQTT rejections, one NATS"
    )
    # By reason: one invalid and one too large from MQTT, one invalid from NATS.
    assert m.get("mesh_ingress_rejected_total", broker="m5", reason="invalid") == 1
    assert m.get("mesh_ingress_rejected_total", broker="m5", reason="too_large") == 1
    assert m.get("mesh_ingress_rejected_total", broker="bus", reason="invalid") == 1
    assert m.get("mesh_dead_letters_total", reason="invalid event") == 3
    logs = [r.getMessage() for r in caplog.records]
    assert any("rejected message from m5" in x and "JSON" in x for x in logs), logs
    assert any("rejected message from m5" in x and "exceeds the limit" in x for x in logs), logs
    assert any(
        "rejected message from bus" in x and "missing required attribute 'type'" in x for x in logs
    ), logs
    client.close()
