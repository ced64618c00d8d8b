"""Per-peer import/export rules, and what the routing table does with them (pure)."""

from __future__ import annotations

import pytest

from mesh.core.routing import Interest, RoutingTable
from mesh.core.rules import EVERYTHING, TopicRules, intersect
from mesh.core.topics import Pattern


def levels(p: str) -> tuple[str, ...]:
    return tuple(p.split("/"))


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("out/#", "out/public/#", "out/public/#"),
        ("#", "a/+/c", "a/+/c"),
        ("a/+/c", "a/b/#", "a/b/c"),
        ("+/x", "y/+", "y/x"),
        ("a/#", "a", "a"),  # '#' matches zero levels too
        ("a/#", "+/b", "a/b"),
        ("a/b", "a/c", None),
        ("a/b", "a/b/c", None),
        ("a/+", "a", None),
        ("+/orders/#", "site-b/#", "site-b/orders/#"),
    ],
)
def test_two_patterns_overlap_in_at_most_one_pattern(a: str, b: str, common: str | None) -> None:
    assert intersect(levels(a), levels(b)) == (levels(common) if common else None)
    assert intersect(levels(b), levels(a)) == (levels(common) if common else None)
    if common is not None:
        # What the overlap matches, both match.
        for topic in ("a/b/c", "out/public/x", "y/x", "a", "a/b", "site-b/orders/1"):
            t = levels(topic)
            both = (
                Pattern.compile(a).match(t) is not None and Pattern.compile(b).match(t) is not None
            )
            assert (Pattern.compile(common).match(t) is not None) == both, topic


def test_rules_allow_by_pattern_and_filter() -> None:
    rules = TopicRules.compile(["site-b/#", {"topic": "x/+", "filter": {"exact": {"type": "ok"}}}])
    assert rules.allows(levels("site-b/a/b"), {})
    assert rules.allows(levels("x/1"), {"type": "ok"})
    assert not rules.allows(levels("x/1"), {"type": "no"})
    assert not rules.allows(levels("y/1"), {"type": "ok"})
    assert TopicRules.compile(None) is EVERYTHING and EVERYTHING.everything
    assert TopicRules.compile(["#"]).everything


def interest(pattern: str, origin: str = "c", path: tuple[str, ...] = ("c", "b")) -> Interest:
    return Interest(origin, pattern, None, path)


def test_an_interest_is_narrowed_to_the_overlap_or_dropped() -> None:
    rules = TopicRules.compile(
        ["out/public/#", {"topic": "alerts/#", "filter": {"prefix": {"type": "x."}}}]
    )
    assert [i.pattern for i in rules.narrow(interest("out/#"))] == ["out/public/#"]
    assert rules.narrow(interest("out/public/a")) == [interest("out/public/a")]
    assert rules.narrow(interest("secret/#")) == []
    (alerts,) = rules.narrow(Interest("c", "alerts/+", {"exact": {"site": "c"}}, ("c", "b")))
    assert alerts.filter == {"all": [{"exact": {"site": "c"}}, {"prefix": {"type": "x."}}]}
    assert [i.pattern for i in rules.narrow(interest("#"))] == ["out/public/#", "alerts/#"]


def routed(t: RoutingTable, topic: str) -> dict[str, set[str]]:
    return t.match(levels(topic), {}).remote


def test_the_table_installs_only_what_our_export_allows_and_rules_change_in_place() -> None:
    t = RoutingTable("a")
    t.link_state("b", True)
    t.set_rules("b", None, TopicRules.compile(["out/public/#"]))
    refused = t.replace_learned(
        "b", [interest("out/#", "b", ("b",)), interest("secret/#", "b", ("b",))]
    )
    assert [r.code for r in refused] == ["export"]
    assert routed(t, "out/public/1") == {"b": {"b"}}
    assert routed(t, "out/private/1") == {}
    assert routed(t, "secret/1") == {}
    # What the peer said is kept as said: widening the export needs no word from it.
    assert sorted(i.pattern for i in t.learned()["b"]) == ["out/#", "secret/#"]
    t.set_rules("b", None, None)
    assert routed(t, "out/private/1") == {"b": {"b"}}
    assert routed(t, "secret/1") == {"b": {"b"}}
    # Removing what was narrowed removes it.
    t.set_rules("b", None, TopicRules.compile(["out/public/#"]))
    t.update_learned("b", [], [("b", interest("out/#").key)])
    assert routed(t, "out/public/1") == {}


def test_what_we_advertise_to_a_peer_is_narrowed_by_our_import_for_it() -> None:
    t = RoutingTable("a")
    t.set_local({0: ("site-b/#", None), 1: ("other/#", None)})
    t.set_rules("b", TopicRules.compile(["site-b/orders/#"]), None)
    assert sorted(i.pattern for i in t.advertised_to("b").values()) == ["site-b/orders/#"]
    assert sorted(i.pattern for i in t.advertised_to("c").values()) == ["other/#", "site-b/#"]


def test_a_path_through_us_is_refused_and_ties_go_to_the_route_learned_first() -> None:
    t = RoutingTable("hub")
    for p in ("site-b", "rogue"):
        t.link_state(p, True)
    t.replace_learned("site-b", [Interest("site-c", "t/#", None, ("site-c", "site-b"))])
    refused = t.replace_learned(
        "rogue",
        [
            Interest("site-c", "t/#", None, ("site-c", "hub", "rogue")),
            Interest("site-c", "t/#", None, ("site-c", "rogue")),  # as short: a tie
        ],
    )
    assert [r.code for r in refused] == ["path"]
    # 'rogue' < 'site-b' alphabetically; the route learned first keeps it all the same.
    assert routed(t, "t/1") == {"site-b": {"site-c"}}
    # While the first route's link is down the other one carries the events...
    t.link_state("site-b", False)
    assert routed(t, "t/1") == {"rogue": {"site-c"}}
    # ...and when it returns, the route learned first is back: the tie is not kept
    # by whoever held the route meanwhile.
    t.link_state("site-b", True)
    assert routed(t, "t/1") == {"site-b": {"site-c"}}
    # Only when it withdraws does the other route take over for good.
    t.replace_learned("site-b", [])
    assert routed(t, "t/1") == {"rogue": {"site-c"}}


def test_interests_beyond_the_per_peer_limit_are_refused() -> None:
    t = RoutingTable("a")
    t.max_per_peer = 3
    refused = t.replace_learned("b", [interest(f"t/{n}", "b", ("b",)) for n in range(5)])
    assert [r.code for r in refused] == ["limit", "limit"]
    assert len(t.learned()["b"]) == 3
    assert [r.code for r in t.update_learned("b", [interest("t/9", "b", ("b",))], [])] == ["limit"]


def test_reach_tells_who_is_behind_each_peer() -> None:
    # c - b - a - d : a announces to d that b and c are behind it, and to b that d is.
    a = RoutingTable("a")
    a.set_reach("b", [("b",), ("c", "b")])
    a.set_reach("d", [("d",)])
    assert a.reach_to("d") == [("a",), ("b", "a"), ("c", "b", "a")]
    assert a.reach_to("b") == [("a",), ("d", "a")]
    assert a.behind("b") == {"b", "c"}
    assert a.behind("d") == {"d"}
    # A path through us is refused; the rest is kept.
    assert a.set_reach("d", [("d",), ("x", "a", "d")]) != []
    assert a.behind("d") == {"d"}
    # A peer that announces no reach (protocol 2) vouches for the paths of its interests.
    a.replace_learned("e", [Interest("f", "t/#", None, ("f", "e"))])
    assert a.behind("e") == {"e", "f"}
    assert ("f", "e", "a") in a.reach_to("d")
