"""The tail hub: matching by pattern and filter, bounded queues, counted drops."""

from __future__ import annotations

import orjson
import pytest

from mesh.core.envelope import Envelope
from mesh.core.errors import FilterError, TooManyClients
from mesh.core.event import Event
from mesh.core.topics import TopicError
from mesh.runtime.metrics import Metrics
from mesh.runtime.tail import TAIL_BYTES, TailHub, event_frame


def env(topic: str, i: int, type: str = "t", data: bytes | None = b"x") -> Envelope:
    return Envelope(Event.create(type, "/src", data, id=str(i)), topic, "here")


async def test_a_subscriber_gets_what_matches_its_pattern_and_filter() -> None:
    hub = TailHub(Metrics())
    sub = hub.subscribe("a/+", {"exact": {"type": "t"}})
    hub.offer([env("a/1", 1), env("b/1", 2), env("a/2", 3, type="u"), env("a/3", 4)])
    got = [orjson.loads(await sub.next_frame())["attributes"]["id"] for _ in range(2)]
    assert got == ["1", "4"] and sub.queue.empty()
    sub.close()
    assert hub.subscribers == []


async def test_what_does_not_fit_is_dropped_counted_and_reported() -> None:
    metrics = Metrics()
    hub = TailHub(metrics, queue=2)
    slow, other = hub.subscribe("#"), hub.subscribe("b/#")
    hub.offer([env("a", i) for i in range(5)])
    assert metrics.get("mesh_tail_dropped_total") == 3
    assert orjson.loads(await slow.next_frame()) == {"type": "dropped", "count": 3}
    assert [orjson.loads(await slow.next_frame())["attributes"]["id"] for _ in range(2)] == [
        "0",
        "1",
    ]
    assert other.queue.empty() and other.dropped == 0


def test_bad_patterns_filters_and_too_many_clients_are_refused() -> None:
    hub = TailHub(Metrics(), max_clients=1)
    with pytest.raises(TopicError):
        hub.subscribe("a/#/b")
    with pytest.raises(FilterError):
        hub.subscribe("a", {"nope": 1})
    hub.subscribe("a")
    with pytest.raises(TooManyClients, match="limit of 1"):
        hub.subscribe("a")


def test_a_frame_carries_text_data_as_text_and_other_bytes_as_base64() -> None:
    text = orjson.loads(event_frame(env("a/b", 1, data="é".encode())))
    assert (text["topic"], text["origin"], text["data"]) == ("a/b", "here", "é")
    binary = orjson.loads(event_frame(env("a/b", 2, data=b"\xff\x00")))
    assert binary["data_base64"] == "/wA=" and "data" not in binary
    assert "data" not in orjson.loads(event_frame(env("a", 3, data=None)))


async def test_large_events_are_bounded_by_bytes_not_only_by_count() -> None:
    metrics = Metrics()
    hub = TailHub(metrics)  # room for 1000 events, but 8 MiB
    sub = hub.subscribe("#")
    big = 1 << 20
    hub.offer([env("a", i, data=b"x" * big) for i in range(12)])
    assert sub.queue.qsize() == 7 and metrics.get("mesh_tail_dropped_total") == 5
    assert sub.bytes <= TAIL_BYTES
    await sub.next_frame()  # the drop report
    await sub.next_frame()
    assert sub.queue.qsize() == 6 and sub.bytes <= TAIL_BYTES - big
