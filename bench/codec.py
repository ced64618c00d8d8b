"""Codec micro-benchmark: µs per event, ours next to the ``cloudevents`` SDK v2 core.

Run from the repository root (exit status 1 if a ratio is below 5)::

    .venv/bin/python bench/codec.py [--n 100000] [--repeat 5] [--clock cpu|wall]

All operations work on one representative event: the four required
attributes, ``time``, ``subject``, ``datacontenttype: application/json``, one
string extension, and the data ``{"temp":21.5,"unit":"C","ok":true}``.

* structured encode: ``encode_structured(event)`` vs ``JSONFormat().write(ce)``
* structured decode: ``decode_structured(body)`` vs ``JSONFormat().read(CloudEvent, body)``
* HTTP binary decode: ``decode_http(headers, body)`` vs
  ``http.from_binary(message, JSONFormat(), CloudEvent)``
* MQTT 5 binary decode: ``decode_mqtt(payload, content_type, properties, "5")``
  (ours only: the SDK has no MQTT binding)
* NATS binary decode: ``decode_nats(payload, headers)`` (ours only: no NATS
  binding in the SDK)

The SDK gets its fastest path: the format object, the SDK event and the
``HTTPMessage`` are built once outside the timed loop, and the event class is
passed explicitly (no version auto-detection per call).  Ours does all a
receiver does: ``decode_http`` also selects the mode from the Content-Type,
and every decoder validates the attributes.  Before timing, each pair is
checked once to do equivalent work: both decoders must give the same
attributes (the SDK's ``time`` as the same instant) and the same data, both
encoders the same JSON document, and every decoder of ours the event itself.

Each operation is timed ``--repeat`` times over ``--n`` calls, ours and the
SDK interleaved, with the garbage collector off while timing (as
:mod:`timeit` does).  The default clock is this process's CPU time, so that
other processes on a busy machine do not count; ``--clock wall`` uses
elapsed time.  The table gives the best and the median µs per call and the
ratio of the best times (SDK / ours), and is written to
``bench/results/codec.md``.

This is a benchmark, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mesh.core.codec import (  # noqa: E402
    Mode,
    decode_http,
    decode_mqtt,
    decode_nats,
    decode_structured,
    encode_http,
    encode_mqtt,
    encode_nats,
    encode_structured,
    from_sdk,
    to_sdk,
)
from mesh.core.event import Event  # noqa: E402

ATTRS: dict[str, str] = {
    "specversion": "1.0",
    "id": "3f1c2a9e-7b4d-4e2a-9c1f-0d5e8a6b7c21",
    "source": "/factory-eu/plant/line-4",
    "type": "com.example.sensor.reading",
    "time": "2024-05-01T12:34:56.123456Z",
    "subject": "line-4/temperature",
    "datacontenttype": "application/json",
    "region": "eu-central",
}
DATA = b'{"temp":21.5,"unit":"C","ok":true}'


# --------------------------------------------------------------------------
# Timing


CLOCKS: dict[str, Callable[[], int]] = {
    "cpu": time.process_time_ns,
    "wall": time.perf_counter_ns,
}


def _sample(
    loop: Callable[[int], None], n: int, clock: Callable[[], int], samples: list[float]
) -> None:
    """Time ``loop(n)`` once and append µs per call to ``samples``."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        loop(n)
        elapsed = clock() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    samples.append(elapsed / n / 1000)


def _looper(fn: Callable[..., Any], *args: Any) -> Callable[[int], None]:
    """A loop calling ``fn(a0, a1, ...)`` n times.

    The call is written out with its arguments, as :mod:`timeit` would, so
    the loop adds no ``*args`` unpacking to either side.
    """
    params = ", ".join(f"a{i}" for i in range(len(args)))
    namespace: dict[str, Any] = {}
    exec(
        f"def loop(n, fn, {params}):\n    for _ in range(n):\n        fn({params})\n",
        namespace,
    )
    inner = namespace["loop"]
    return lambda n: inner(n, fn, *args)


@dataclass
class Case:
    name: str
    ours: Callable[[int], None]
    sdk: Callable[[int], None] | None = None
    ours_samples: list[float] = field(default_factory=list)
    sdk_samples: list[float] = field(default_factory=list)

    def best(self, side: str) -> float:
        return min(self.ours_samples if side == "ours" else self.sdk_samples)

    def median(self, side: str) -> float:
        return statistics.median(self.ours_samples if side == "ours" else self.sdk_samples)

    @property
    def ratio(self) -> float | None:
        if self.sdk is None:
            return None
        return self.best("sdk") / self.best("ours")


# --------------------------------------------------------------------------
# Equivalence, checked once before timing


def _same(ours: Event, ce: Any, what: str) -> None:
    """Fail unless our Event and the SDK's CloudEvent hold the same event."""
    theirs = from_sdk(ce)  # time -> RFC 3339 text, dict data -> JSON bytes
    if ours.attrs != theirs.attrs:
        raise SystemExit(f"{what}: attributes differ:\n  ours {ours.attrs}\n  SDK  {theirs.attrs}")
    if orjson.loads(ours.data or b"null") != orjson.loads(theirs.data or b"null"):
        raise SystemExit(f"{what}: data differs:\n  ours {ours.data!r}\n  SDK  {theirs.data!r}")
    sdk_time = ce.get_time()
    if not isinstance(sdk_time, datetime) or sdk_time != datetime.fromisoformat(ATTRS["time"]):
        raise SystemExit(f"{what}: SDK time {sdk_time!r} is not {ATTRS['time']}")


def build_cases() -> list[Case]:
    event = Event(dict(ATTRS), DATA)
    fmt = JSONFormat()
    ce = to_sdk(event)

    structured = encode_structured(event)
    sdk_structured = fmt.write(ce)
    if orjson.loads(structured) != orjson.loads(sdk_structured):
        raise SystemExit(
            "structured encode: documents differ:\n"
            f"  ours {structured!r}\n  SDK  {sdk_structured!r}"
        )

    headers, body = encode_http(event, Mode.BINARY)
    message = sdk_http.HTTPMessage(headers=headers, body=body)
    mqtt_payload, mqtt_ct, mqtt_props = encode_mqtt(event, Mode.BINARY, "5")
    nats_payload, nats_headers = encode_nats(event, Mode.BINARY)

    # Each decoder must give back the event; each pair must agree.
    decoded = decode_structured(structured)
    _same(decoded, fmt.read(CloudEvent, structured), "structured decode")
    mode, events = decode_http(headers, body)
    if mode is not Mode.BINARY or len(events) != 1 or not isinstance(events[0], Event):
        raise SystemExit(f"HTTP binary decode: got {mode} {events!r}")
    _same(events[0], sdk_http.from_binary(message, fmt, CloudEvent), "HTTP binary decode")
    for what, got in (
        ("structured decode", decoded),
        ("HTTP binary decode", events[0]),
        ("MQTT 5 binary decode", decode_mqtt(mqtt_payload, mqtt_ct, mqtt_props, "5")),
        ("NATS binary decode", decode_nats(nats_payload, nats_headers)),
    ):
        if got != event:
            raise SystemExit(f"{what}: decoded {got!r} is not the event {event!r}")

    sdk_read, sdk_write, sdk_from_binary = fmt.read, fmt.write, sdk_http.from_binary
    return [
        Case("structured encode", _looper(encode_structured, event), _looper(sdk_write, ce)),
        Case(
            "structured decode",
            _looper(decode_structured, structured),
            _looper(sdk_read, CloudEvent, structured),
        ),
        Case(
            "HTTP binary decode",
            _looper(decode_http, headers, body),
            _looper(sdk_from_binary, message, fmt, CloudEvent),
        ),
        Case(
            "MQTT 5 binary decode",
            _looper(decode_mqtt, mqtt_payload, mqtt_ct, mqtt_props, "5"),
        ),
        Case("NATS binary decode", _looper(decode_nats, nats_payload, nats_headers)),
    ]


# --------------------------------------------------------------------------
# Report


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> str:
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return f"{logical} logical" + (f" ({usable} usable)" if usable != logical else "")


def report(cases: list[Case], n: int, repeat: int, clock: str, min_ratio: float) -> str:
    lines = [
        "# Codec benchmark: µs per event, ours vs the cloudevents SDK",
        "",
        f"- machine: {_cpu_model()}, {_cores()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"orjson {version('orjson')}, cloudevents {version('cloudevents')}",
        f"- {n} calls per sample, {repeat} samples per operation, {clock} clock; "
        "best and median µs per call; ratio = SDK best / ours best",
        f"- command: `.venv/bin/python bench/codec.py --n {n} --repeat {repeat} --clock {clock}`",
        "",
        "| operation | ours best | ours median | SDK best | SDK median | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        ours = f"{c.best('ours'):.2f} | {c.median('ours'):.2f}"
        if c.ratio is None:
            lines.append(f"| {c.name} | {ours} | — | — | — |")
        else:
            ok = "" if c.ratio >= min_ratio else " **below target**"
            lines.append(
                f"| {c.name} | {ours} | {c.best('sdk'):.2f} | {c.median('sdk'):.2f} "
                f"| {c.ratio:.1f}x{ok} |"
            )
    lines += [
        "",
        f"Target: ours at least {min_ratio:g}x faster than the SDK on each compared operation.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls per sample")
    parser.add_argument("--repeat", type=int, default=5, help="samples per operation")
    parser.add_argument("--min-ratio", type=float, default=5.0, help="exit 1 below this")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU time (robust on a busy machine, the default); "
        "wall: elapsed time",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "codec.md",
        help="where to write the markdown table",
    )
    args = parser.parse_args(argv)

    cases = build_cases()
    for c in cases:  # warm up caches and the interpreter's specialisation
        c.ours(min(args.n, 2000))
        if c.sdk is not None:
            c.sdk(min(args.n, 2000))
    clock = CLOCKS[args.clock]
    for _ in range(args.repeat):
        for c in cases:
            _sample(c.ours, args.n, clock, c.ours_samples)
            if c.sdk is not None:
                _sample(c.sdk, args.n, clock, c.sdk_samples)

    text = report(cases, args.n, args.repeat, args.clock, args.min_ratio)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    below = [c.name for c in cases if c.ratio is not None and c.ratio < args.min_ratio]
    if below:
        print(f"below {args.min_ratio:g}x: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
