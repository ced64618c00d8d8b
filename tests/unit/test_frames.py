"""Peer-link control frames: what a peer sends is parsed and validated before use."""

from __future__ import annotations

import orjson
import pytest

from mesh.core import frames
from mesh.core.errors import LinkProtocolError
from mesh.core.frames import (
    LINK_VERSIONS,
    Ack,
    Credit,
    Hello,
    InterestRefused,
    Interests,
    Notice,
    Unknown,
    Welcome,
    negotiate,
    parse_control,
    parse_hello,
    parse_interest,
    parse_welcome,
)
from mesh.core.routing import Interest


def j(obj: object) -> bytes:
    return orjson.dumps(obj)


# -- versions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("theirs", "ours", "agreed"),
    [
        ((1, 2), (1, 2), 2),
        ((1, 1), (1, 2), 1),  # an old node: both speak version 1
        ((1, 2), (1, 1), 1),
        ((2, 5), (1, 3), 3),  # a newer node: the newest both speak
        ((3, 4), (1, 2), None),  # nothing in common
    ],
)
def test_negotiate_picks_the_newest_version_both_speak(
    theirs: tuple[int, int], ours: tuple[int, int], agreed: int | None
) -> None:
    assert negotiate(theirs, ours) == agreed


def test_a_hello_carries_the_range_and_its_oldest_as_version() -> None:
    sent = orjson.loads(frames.hello("site-a", "eu", "tok", (1, 2)))
    assert sent["versions"] == [1, 2]
    assert sent["version"] == 1  # what a version-1 acceptor checks
    assert parse_hello(frames.hello("site-a", "eu", "tok", (1, 2))) == Hello(
        "site-a", "eu", (1, 2), "tok"
    )


def test_a_version_1_hello_without_a_range_is_understood() -> None:
    old = j({"type": "hello", "node": "site-a", "region": "eu", "version": 1, "token": "t"})
    assert parse_hello(old) == Hello("site-a", "eu", (1, 1), "t")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"[1, 2]", "expected a hello frame"),
        (b"\xff\xfe", "expected a hello frame"),
        (j({"type": "ack"}), "expected a hello frame"),
        (j({"type": "hello", "node": "Site A!", "version": 1}), "valid node id"),
        (j({"type": "hello", "node": "site-a"}), "protocol version"),
        (j({"type": "hello", "node": "site-a", "versions": [2, 1]}), "protocol version"),
        (j({"type": "hello", "node": "site-a", "version": "1"}), "protocol version"),
    ],
)
def test_a_bad_hello_is_refused_with_a_reason(text: bytes, reason: str) -> None:
    refused = parse_hello(text)
    assert isinstance(refused, str)
    assert reason in refused


def test_a_hello_with_a_non_string_token_is_a_hello_with_no_token() -> None:
    parsed = parse_hello(j({"type": "hello", "node": "site-a", "version": 1, "token": 7}))
    assert isinstance(parsed, Hello) and parsed.token == ""


def test_a_welcome_outside_our_versions_is_a_protocol_error() -> None:
    newest = LINK_VERSIONS[1]
    ok = parse_welcome(j({"type": "welcome", "node": "site-b", "version": newest}), "site-b")
    assert ok == Welcome("site-b", "", newest)
    with pytest.raises(LinkProtocolError, match="unsupported protocol version"):
        parse_welcome(j({"type": "welcome", "node": "site-b", "version": newest + 1}), "site-b")


@pytest.mark.parametrize(
    "text",
    [b"[]", b'"welcome"', b"{}", b"not json", j({"type": 5}), j({"type": "welcome"})],
)
def test_a_malformed_welcome_is_a_protocol_error(text: bytes) -> None:
    with pytest.raises(LinkProtocolError):
        parse_welcome(text, "site-b")


def test_a_refusal_carries_the_acceptors_reason() -> None:
    assert parse_welcome(j({"type": "refused", "reason": "bad token"}), "site-b") == "bad token"


# -- control frames -------------------------------------------------------------------


def test_control_frames_parse_to_their_types() -> None:
    assert parse_control(j({"type": "ack", "seq": 7, "credit": 10}), "p") == Ack(7, 10)
    assert parse_control(j({"type": "ack", "seq": 7}), "p") == Ack(7, -1)
    assert parse_control(j({"type": "credit", "events": 3}), "p") == Credit(3)
    assert parse_control(j({"type": "notice", "refused": [{"a": 1}, 2]}), "p") == Notice([{"a": 1}])
    assert parse_control(j({"type": "later-feature"}), "p") == Unknown("later-feature")


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "ack", "seq": "7"},
        {"type": "ack", "seq": -1},
        {"type": "ack", "seq": 1, "credit": 1 << 40},
        {"type": "credit", "events": 1.5},
        {"type": "credit"},
        {"type": "interests", "full": "yes"},
        {"type": "interests", "add": {}},
    ],
)
def test_control_frames_with_wrong_types_are_protocol_errors(obj: dict[str, object]) -> None:
    with pytest.raises(LinkProtocolError):
        parse_control(j(obj), "p")


# -- interests ------------------------------------------------------------------------


def interest(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "origin": "site-c",
        "pattern": "site-a/orders/#",
        "path": ["site-c", "site-b"],
    }
    base.update(over)
    return base


def test_a_valid_interest_is_taken() -> None:
    parsed = parse_interest(interest(), "site-b")
    assert parsed == Interest("site-c", "site-a/orders/#", None, ("site-c", "site-b"), True)


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"pattern": "a/#/b"}, "pattern"),
        ({"pattern": "x" * (frames.MAX_PATTERN + 1)}, "pattern"),
        ({"pattern": 5}, "pattern"),
        ({"origin": "Not An Id"}, "origin"),
        ({"filter": {"nonsense": 1}}, "filter"),
        ({"filter": {"sql": "subject LIKE"}}, "filter"),
        ({"path": "site-c"}, "path"),
        ({"path": ["site-b"]}, "path"),  # must start at the origin
        ({"path": ["site-c", "site-x"]}, "path"),  # must end with the sending peer
        ({"path": ["site-c", "site-d", "site-c", "site-b"]}, "path"),  # a loop
        ({"path": ["site-c"] + [f"n{i}" for i in range(40)] + ["site-b"]}, "path"),
    ],
)
def test_a_bad_interest_is_refused_with_its_reason(over: dict[str, object], code: str) -> None:
    refused = parse_interest(interest(**over), "site-b")
    assert isinstance(refused, InterestRefused)
    assert refused.code == code
    assert refused.detail


def test_a_deeply_nested_filter_is_refused_not_a_crash() -> None:
    spec: dict[str, object] = {"exact": {"type": "x"}}
    for _ in range(5000):
        spec = {"not": spec}
    refused = parse_interest(interest(filter=spec), "site-b")
    assert isinstance(refused, InterestRefused) and refused.code == "filter"


def test_one_bad_interest_does_not_spoil_the_rest_of_the_frame() -> None:
    frame = j(
        {
            "type": "interests",
            "full": True,
            "add": [interest(), interest(pattern="a/#/b"), "junk"],
            "remove": [{"origin": "site-c", "pattern": "x/#"}, 7],
        }
    )
    parsed = parse_control(frame, "site-b")
    assert isinstance(parsed, Interests)
    assert [i.pattern for i in parsed.add] == ["site-a/orders/#"]
    assert sorted(r.code for r in parsed.refused) == ["malformed", "malformed", "pattern"]
    assert len(parsed.remove) == 1


def test_too_many_interests_in_one_frame_are_cut_and_reported() -> None:
    many = [interest(pattern=f"t/{i}") for i in range(frames.MAX_INTERESTS + 5)]
    parsed = parse_control(j({"type": "interests", "full": True, "add": many}), "site-b")
    assert isinstance(parsed, Interests)
    assert len(parsed.add) == frames.MAX_INTERESTS
    assert [r.code for r in parsed.refused] == ["limit"]
