"""Schema and transform micro-benchmark: µs per event for the edge checks of issue 15.

    .venv/bin/python -m bench.transforms [--n 20000] [--repeat 5] [--clock cpu|wall]

One order event (four required attributes, ``time``, ``subject``,
``datacontenttype: application/json``, data ``{"id": …, "items": [5 lines]}``,
about 300 bytes) goes through the work each feature adds, timed with the
garbage collector off, best and median of ``--repeat`` samples of ``--n``
calls, on this process's CPU clock (``--clock wall``: elapsed time):

* ``schema check, no schema``: :meth:`Schemas.check` where no schema applies
  to the type (what every event of other types pays);
* ``schema check, valid`` / ``invalid``: the check of the contract's order
  schema (jsonschema-rs; parse the data, validate; the invalid one also
  builds the reason with the failing path);
* ``egress encode``: :meth:`EgressRule.encode` to NATS binary, no transform
  (the baseline of an egress rule);
* ``egress encode + at: egress schema``: the same with the schema checked;
* ``egress encode + JSONata transform``: the contract's transform
  (``{"order": data.id, "total": $sum(data.items.(qty * price))}`` and a new
  ``type``) before encoding;
* ``JSONata evaluate alone``: the compiled expression on the parsed event.

The table is printed and written to ``bench/results/transforms.md``. A
benchmark, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson

from bridges.nats import SPEC as NATS
from mesh.config import EgressRule as EgressConfig
from mesh.config import SchemaEntry
from mesh.core.egress import EgressRule
from mesh.core.envelope import Envelope
from mesh.core.event import Event
from mesh.core.schemas import Schemas
from mesh.core.transform import compile_jsonata, event_document

RESULTS = Path(__file__).resolve().parent / "results"
EXPRESSION = '{"order": data.id, "total": $sum(data.items.(qty * price))}'
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "qty", "price"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0},
                },
            },
        },
    },
}
CLOCKS: dict[str, Callable[[], int]] = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}


def order(qty_of_third: int = 2) -> Event:
    items = [{"sku": f"sku-{i}", "qty": 1 + i % 3, "price": 2.5 * (i + 1)} for i in range(5)]
    items[2]["qty"] = qty_of_third
    return Event(
        {
            "specversion": "1.0",
            "id": "3f1c2a9e-7b4d-4e2a-9c1f-0d5e8a6b7c21",
            "source": "/shop-eu/checkout",
            "type": "com.example.order.requested",
            "time": "2024-05-01T12:34:56.123456Z",
            "subject": "o-1001",
            "datacontenttype": "application/json",
        },
        orjson.dumps({"id": "o-1001", "items": items}),
    )


def rule(**extra: Any) -> EgressRule:
    cfg = EgressConfig.model_validate(
        {"to": "bus", "topic": "+/orders/#", "target": "orders.{subject}", **extra}
    )
    return EgressRule(0, cfg, binding=NATS.binding(None), separator=".")


def schemas(at: str) -> Schemas:
    entry = {"type": "com.example.order.requested", "inline": SCHEMA, "at": at}
    return Schemas.compile([SchemaEntry.model_validate(entry)])


def time_it(fn: Callable[[], Any], n: int, repeat: int, clock: Callable[[], int]) -> list[float]:
    fn()  # warm: caches, first compile
    samples = []
    for _ in range(repeat):
        gc_was = gc.isenabled()
        gc.disable()
        try:
            start = clock()
            for _ in range(n):
                fn()
            samples.append((clock() - start) / n / 1000)
        finally:
            if gc_was:
                gc.enable()
    return samples


def cases() -> list[tuple[str, Callable[[], Any]]]:
    valid, invalid = order(), order(-1)
    other = Event({**valid.attrs, "type": "com.example.sensor.reading"}, valid.data)
    at_ingress = schemas("ingress")
    at_egress = schemas("egress")
    assert at_ingress.check(valid, "ingress") is None
    reason = at_ingress.check(invalid, "ingress") or ""
    assert reason.startswith("data.items[2].qty: -1 is less than the minimum of 1"), reason
    env = Envelope(valid, "eu/orders/o-1001", "shop-eu")
    plain = rule()
    transformed = rule(
        transform={"jsonata": EXPRESSION, "attributes": {"type": "com.example.order.summary"}}
    )
    out = transformed.encode(env)
    assert orjson.loads(out.payload) == {"order": "o-1001", "total": 62.5}, out.payload
    expr = compile_jsonata(EXPRESSION)
    doc = event_document(valid)
    return [
        ("schema check, no schema for the type", lambda: at_ingress.check(other, "ingress")),
        ("schema check, valid order", lambda: at_ingress.check(valid, "ingress")),
        (
            "schema check, invalid order (reason with path)",
            lambda: at_ingress.check(invalid, "ingress"),
        ),
        ("egress encode (NATS binary), no transform", lambda: plain.encode(env)),
        ("egress encode + at: egress schema", lambda: plain.encode(env, at_egress)),
        ("egress encode + JSONata transform", lambda: transformed.encode(env)),
        ("JSONata evaluate alone (parsed input)", lambda: expr.evaluate(doc)),
    ]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=20_000, help="calls per sample")
    p.add_argument("--repeat", type=int, default=5, help="samples per case")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    rows = []
    for name, fn in cases():
        n = max(200, args.n // 20) if "JSONata" in name else args.n
        samples = time_it(fn, n, args.repeat, CLOCKS[args.clock])
        rows.append((name, min(samples), statistics.median(samples)))
        print(
            f"{name:50s} best {min(samples):8.2f} µs  median {statistics.median(samples):8.2f} µs"
        )
    base = rows[3][1]
    lines = [
        "# Schema and transform micro-benchmark",
        "",
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {_cpu()}; "
        f"Python {platform.python_version()}, jsonschema-rs {version('jsonschema-rs')}, "
        f"jsonata-python {version('jsonata-python')}; clock {args.clock}, "
        f"{args.repeat} samples of {args.n} calls (JSONata cases: {max(200, args.n // 20)}).",
        "",
        "| operation | best µs/event | median µs/event | added to egress encode |",
        "|---|---:|---:|---:|",
    ]
    for i, (name, best, median) in enumerate(rows):
        added = f"+{best - base:.2f}" if i in (4, 5) else ""
        lines.append(f"| {name} | {best:.2f} | {median:.2f} | {added} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transforms.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
