"""The routing table: trie matching, filters, interests, path vectors, destination sets."""

from __future__ import annotations

import pytest

from mesh.core.errors import FilterError
from mesh.core.filters import compile_filter
from mesh.core.routing import Interest, RoutingTable

EV = {
    "specversion": "1.0",
    "id": "1",
    "source": "/s",
    "type": "com.example.a",
    "subject": "t1",
    "count": 5,
    "flag": True,
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"exact": {"type": "com.example.a"}}, True),
        ({"exact": {"type": "com.example.A"}}, False),  # case-sensitive
        ({"prefix": {"type": "com.example."}}, True),
        ({"suffix": {"type": ".a", "subject": "1"}}, True),
        ({"suffix": {"type": ".a", "subject": "2"}}, False),
        ({"exact": {"missing": "x"}}, False),
        ({"exact": {"count": "5", "flag": "true"}}, True),  # canonical string forms
        ({"all": [{"prefix": {"type": "com"}}, {"exact": {"subject": "t1"}}]}, True),
        ({"any": [{"exact": {"type": "x"}}, {"exact": {"subject": "t1"}}]}, True),
        ({"not": {"exact": {"type": "com.example.a"}}}, False),
        ([{"prefix": {"type": "com"}}, {"exact": {"subject": "t2"}}], False),
        ([], True),
    ],
)
def test_filter_dialects(spec: object, expected: bool) -> None:
    assert compile_filter(spec)(EV) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"prefx": {"type": "x"}}, "unknown filter dialect 'prefx'"),
        ({"exact": {}}, "non-empty mapping"),
        ({"exact": {"type": ""}}, "must be a non-empty string"),
        ({"all": []}, "non-empty list"),
        ({"exact": {"a": "b"}, "prefix": {"a": "b"}}, "exactly one dialect"),
        ({"sql": ""}, "CESQL expression"),
    ],
)
def test_invalid_filters(spec: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(spec)


def test_local_match_with_captures_and_filters() -> None:
    t = RoutingTable("a")
    t.set_local(
        {
            0: ("sensors/+/temp", None),
            1: ("sensors/#", {"exact": {"subject": "t1"}}),
            2: ("other/#", None),
            3: ("sensors/+/temp", None),
        }
    )
    assert t.match(("sensors", "x", "temp"), EV).local == [0, 1, 3]
    assert t.match(("sensors", "x", "temp"), {**EV, "subject": "t2"}).local == [0, 3]
    assert not t.match(("nothing",), EV)


def test_learned_interests_and_destination_sets() -> None:
    t = RoutingTable("a")
    t.link_state("b", True)
    t.link_state("c", True)
    t.replace_learned(
        "b", [Interest("b", "x/#", None, ("b",)), Interest("d", "x/#", None, ("d", "b"))]
    )
    t.replace_learned(
        "c",
        [
            Interest("d", "x/#", None, ("d", "e", "c")),
            Interest("a", "x/#", None, ("a", "c")),  # our own: rejected
            Interest("e", "x/#", None, ("e", "a", "c")),
        ],
    )  # path has us
    assert t.looped == 2
    d = t.match(("x", "1"), EV)
    assert d.remote == {"b": {"b", "d"}}  # d via b: shortest path
    assert t.match(("x", "1"), EV, only=frozenset({"d"})).remote == {"b": {"d"}}
    # Split horizon: what we learned from b is not advertised back to b.
    assert all(i.path[-2] != "b" for i in t.advertised_to("b").values() if len(i.path) > 1)
    adv_c = t.advertised_to("c")
    assert ("d", ("x/#", "")) in adv_c and adv_c[("d", ("x/#", ""))].path == ("d", "b", "a")
    # b goes down: d is re-routed over c, b's own interest stays (queued for b's return).
    t.link_state("b", False)
    assert t.match(("x", "1"), EV).remote == {"b": {"b"}, "c": {"d"}}
    t.forget_peer("b")
    assert t.match(("x", "1"), EV).remote == {"c": {"d"}}


def test_incremental_updates_and_aggregation() -> None:
    t = RoutingTable("a")
    t.link_state("b", True)
    i1 = Interest("b", "x/+", {"exact": {"type": "com.example.a"}}, ("b",))
    i2 = Interest("c", "x/+", {"exact": {"type": "com.example.a"}}, ("c", "b"))
    t.update_learned("b", [i1, i2], [])
    assert len(t._trie.by_key) == 1  # same pattern and filter: one entry, one evaluation
    assert t.match(("x", "y"), EV).remote == {"b": {"b", "c"}}
    t.update_learned("b", [], [("b", i1.key)])
    assert t.match(("x", "y"), EV).remote == {"b": {"c"}}
    t.update_learned("b", [], [("c", i2.key)])
    assert not t.match(("x", "y"), EV)
    assert t._trie.by_key == {}


def test_a_down_link_is_a_fallback_and_advertised_as_unreachable() -> None:
    # Ring: a reaches x directly via b, or the long way via d.
    t = RoutingTable("a")
    t.link_state("b", True)
    t.link_state("d", True)
    t.replace_learned("b", [Interest("x", "t/#", None, ("x", "b"))])
    t.replace_learned("d", [Interest("x", "t/#", None, ("x", "c", "d"))])
    assert t.match(("t", "1"), EV).remote == {"b": {"x"}}
    t.link_state("b", False)
    assert t.match(("t", "1"), EV).remote == {"d": {"x"}}  # rerouted
    t.link_state("b", True)
    assert t.match(("t", "1"), EV).remote == {"b": {"x"}}
    # A neighbour that reports its own path as down is avoided too.
    t.update_learned("b", [Interest("x", "t/#", None, ("x", "b"), up=False)], [])
    assert t.match(("t", "1"), EV).remote == {"d": {"x"}}

    # Line: the only path is down; events still queue towards it, and the
    # route is advertised onwards as unreachable so others prefer any other.
    line = RoutingTable("b")
    line.link_state("c", True)
    line.replace_learned("c", [Interest("c", "t/#", None, ("c",))])
    key = ("c", ("t/#", ""))
    assert line.advertised_to("a")[key].up is True
    line.link_state("c", False)
    assert line.match(("t", "1"), EV).remote == {"c": {"c"}}
    assert line.advertised_to("a")[key].up is False
    assert [r.reachable for r in line.routes()] == [False]
