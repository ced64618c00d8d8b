"""The node's log: JSON lines with the fields of an event, repeated warnings held back."""

from __future__ import annotations

import io
import logging
import time

import orjson
import pytest

from mesh.runtime.logs import _MAX_KEYS, JsonFormatter, RepeatFilter


def _logger(fmt: logging.Formatter, window: float = 60.0) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(fmt)
    handler.addFilter(RepeatFilter(window))
    logger = logging.getLogger(f"test-logs-{id(out)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_a_json_line_carries_the_event_id_the_topic_and_the_node() -> None:
    logger, out = _logger(JsonFormatter("site-a"))
    logger.warning(
        "egress %s: event %s dead-lettered",
        "bus:0",
        "e1",
        extra={"egress": "bus:0", "event_id": "e1", "topic": "a/b", "reason": "400"},
    )
    line = orjson.loads(out.getvalue().strip())
    assert line["message"] == "egress bus:0: event e1 dead-lettered"
    assert (line["level"], line["node"], line["egress"]) == ("warning", "site-a", "bus:0")
    assert (line["event_id"], line["topic"], line["reason"]) == ("e1", "a/b", "400")
    assert line["time"].endswith("+00:00")


def test_identical_warnings_are_held_back_and_counted_when_next_shown() -> None:
    logger, out = _logger(logging.Formatter("%(message)s"), window=0.2)
    for _ in range(50):
        logger.warning("peer %s refused: %s", "x", "bad token")
    logger.warning("another problem")
    assert out.getvalue().splitlines() == ["peer x refused: bad token", "another problem"]
    time.sleep(0.25)
    logger.warning("peer %s refused: %s", "x", "bad token")
    last = out.getvalue().splitlines()[-1]
    assert last == "peer x refused: bad token (and 49 more like it in the last 0.2 s)"


def test_info_and_debug_lines_are_never_held_back() -> None:
    logger, out = _logger(logging.Formatter("%(message)s"))
    for _ in range(3):
        logger.info("link b up")
    assert out.getvalue().splitlines() == ["link b up"] * 3


def test_the_kinds_remembered_stay_bounded() -> None:
    f = RepeatFilter(60.0)
    for i in range(5_000):
        record = logging.LogRecord("x", logging.WARNING, "", 0, "peer %s: %s", (f"p{i}", "r"), None)
        assert f.filter(record)  # each a new kind: shown
    assert len(f._seen) == _MAX_KEYS  # the least recently seen forgotten, not all scanned


def test_a_stream_of_bad_messages_is_one_line_per_broker_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from unittest import mock

    from mesh.core.ingress import Rejected
    from mesh.core.message import Message
    from mesh.runtime.ingress import Ingress
    from mesh.runtime.metrics import Metrics

    metrics = Metrics()
    ingress = Ingress([], mock.Mock(), metrics)
    with caplog.at_level(logging.WARNING, logger="mesh.runtime.ingress"):
        for i in range(100):
            ingress.reject("web", Message(f"t/{i}", b"x"), Rejected(f"bad {i}"))
        ingress.reject("web", Message("t/big", b"x"), Rejected("too big", too_large=True))
        ingress.reject("bus", Message("t/1", b"x"), Rejected("bad"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected message from web on 't/0': bad 0",
        "rejected message from web on 't/big': too big",
        "rejected message from bus on 't/1': bad",
    ]
    assert metrics.get("mesh_ingress_rejected_total", broker="web", reason="invalid") == 100
