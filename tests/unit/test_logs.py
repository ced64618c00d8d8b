"""The node's log: JSON lines with the fields of an event, repeated warnings held back."""

from __future__ import annotations

import io
import logging
import time

import orjson

from mesh.runtime.logs import JsonFormatter, RepeatFilter


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
