"""Egress rules by operator name: outboxes named after them, queued events carried over.

Events queued under the outbox keys of versions before egress names (one per
subscription: ``egress:<broker>:<pattern>:<filter>``) are delivered after the
upgrade, not orphaned; so are events under a default name ``<to>:<index>``
that moved because a rule was inserted before it. The ingress time in a
record survives the round trip and is stripped for peers older than link
protocol 4.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridges.memory import broker
from mesh.core.envelope import Envelope, decode_record, encode_record, without_ingress_time
from mesh.core.errors import ConfigErrors, LinkProtocolError, PublishError
from mesh.core.event import Event
from mesh.runtime.node import Node
from mesh.runtime.store import open_store
from tests.helpers import node_config, unique, wait_for


def _record(i: int, topic: str = "a/b") -> bytes:
    ev = Event({"specversion": "1.0", "id": f"old-{i}", "source": "/s", "type": "t"}, b"{}")
    return encode_record(Envelope(ev, topic, "solo"))


async def test_events_queued_under_an_old_subscription_key_are_delivered_after_the_upgrade(
    tmp_path: Path,
) -> None:
    name = unique("bus")
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"bus": {"kind": "memory", "name": name}},
        egress=[{"to": "bus", "topic": "a/#", "target": "out/{id}"}],
    )
    store = open_store(cfg.node.data_dir)
    await store.open()
    box = await store.box_id("egress:bus:a/#:")  # the key an earlier version used
    await store.append([(None, [(box, _record(i))]) for i in range(3)])
    await store.close()

    async with Node(cfg).serve() as node:
        bus = broker(name)
        await wait_for(lambda: len(bus.published) == 3, what="the queued events delivered")
        assert sorted(m.topic for m in bus.published) == ["out/old-0", "out/old-1", "out/old-2"]
        names = await node.store.box_names()
        assert "egress:bus:0" in names and "egress:bus:a/#:" not in names
        assert node.metrics.get("mesh_egress_events_total", egress="bus:0") == 3


async def test_a_default_name_that_moves_on_reload_keeps_its_queued_events(
    tmp_path: Path,
) -> None:
    name = unique("bus")
    brokers = {"bus": {"kind": "memory", "name": name}}
    rule = {"to": "bus", "topic": "a/#", "target": "out/{id}"}
    async with Node(node_config(tmp_path, "solo", brokers=brokers, egress=[rule])).serve() as node:
        await node.ready()
        bus = broker(name)
        bus.fail_publish = PublishError("bus", "down for the test")  # events stay queued
        await node.router.route([decode_record(_record(i)) for i in range(3)])
        box = node.outboxes.find("egress:bus:0")
        assert box is not None and box.depth == 3
        await asyncio.sleep(0.3)
        assert 0.3 <= box.oldest_age() < 5  # mesh_outbox_oldest_seconds
        # Another rule goes first: ours is now bus:1, with the same subscription.
        other = {"to": "bus", "topic": "z/#", "target": "z"}
        await node.reload(node_config(tmp_path, "solo", brokers=brokers, egress=[other, rule]))
        assert node.outboxes.find("egress:bus:1") is box and box.depth == 3
        bus.fail_publish = None
        await wait_for(lambda: len(bus.published) == 3, timeout=15, what="delivered after all")
        assert sorted(m.topic for m in bus.published) == ["out/old-0", "out/old-1", "out/old-2"]
        assert await node.store.dlq_count() == 0


def test_duplicate_egress_names_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as err:
        node_config(
            tmp_path,
            "solo",
            brokers={"bus": {"kind": "memory"}},
            egress=[
                {"name": "x", "to": "bus", "topic": "a", "target": "a"},
                {"name": "x", "to": "bus", "topic": "b", "target": "b"},
            ],
        )
    assert "egress[1].name: duplicate egress name 'x'" in str(err.value)


def test_the_ingress_time_travels_in_the_record_and_is_stripped_for_old_peers() -> None:
    ev = Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, b"data")
    rec = encode_record(Envelope(ev, "a/b", "n1", 2, None, 1700000000.25))
    env = decode_record(rec)
    assert env.t_in == 1700000000.25 and env.event.data == b"data"
    old = without_ingress_time(rec)
    back = decode_record(old)
    assert back.t_in is None and back.event.data == b"data" and back.hops == 2
    assert decode_record(encode_record(Envelope(ev, "a/b", "n1"))).t_in is None
    bad = encode_record(Envelope(ev, "a/b", "n1", 0, None, 1.0)).replace(b",1.0]", b',"x"]')
    with pytest.raises(LinkProtocolError, match="ingress time"):
        decode_record(bad)


async def test_two_rules_that_swap_places_each_keep_their_queued_events(tmp_path: Path) -> None:
    name = unique("bus")
    brokers = {"bus": {"kind": "memory", "name": name}}
    a = {"to": "bus", "topic": "a/#", "target": "out-a/{id}"}
    z = {"to": "bus", "topic": "z/#", "target": "out-z/{id}"}
    async with Node(node_config(tmp_path, "solo", brokers=brokers, egress=[a, z])).serve() as node:
        await node.ready()
        bus = broker(name)
        bus.fail_publish = PublishError("bus", "down for the test")
        await node.router.route([decode_record(_record(i, "a/x")) for i in range(2)])
        await node.router.route([decode_record(_record(i + 10, "z/x")) for i in range(3)])
        box_a, box_z = node.outboxes.find("egress:bus:0"), node.outboxes.find("egress:bus:1")
        assert box_a is not None and box_z is not None and (box_a.depth, box_z.depth) == (2, 3)
        await node.reload(node_config(tmp_path, "solo", brokers=brokers, egress=[z, a]))
        assert node.outboxes.find("egress:bus:1") is box_a and box_a.depth == 2
        assert node.outboxes.find("egress:bus:0") is box_z and box_z.depth == 3
        bus.fail_publish = None
        await wait_for(lambda: len(bus.published) == 5, timeout=15, what="all delivered")
        assert sorted(m.topic for m in bus.published) == [
            "out-a/old-0", "out-a/old-1", "out-z/old-10", "out-z/old-11", "out-z/old-12",
        ]  # fmt: skip
        assert await node.store.dlq_count() == 0


async def test_an_outbox_whose_rule_was_removed_while_down_is_dead_lettered_at_start(
    tmp_path: Path,
) -> None:
    name = unique("bus")
    cfg = node_config(
        tmp_path,
        "solo",
        brokers={"bus": {"kind": "memory", "name": name}},
        egress=[{"to": "bus", "topic": "a/#", "target": "out/{id}"}],
    )
    store = open_store(cfg.node.data_dir)
    await store.open()
    gone = await store.box_id("egress:bus:q/#:")  # a subscription no rule has any more
    await store.append([(None, [(gone, _record(i, "q/x"))]) for i in range(2)])
    await store.close()
    async with Node(cfg).serve() as node:
        await node.ready()
        assert node.outboxes.find("egress:bus:q/#:") is None
        letters = await node.store.dead_letters(limit=10, after=0)
        assert [e.reason for e in letters] == ["egress subscription removed"] * 2
        assert (
            node.metrics.get("mesh_dead_letters_total", reason="egress subscription removed") == 2
        )
