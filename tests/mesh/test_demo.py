"""The README's demo, end to end: three sites, every order completes, all telemetry arrives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_completes_every_order_and_delivers_all_telemetry() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--duration", "14", "--rate", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo OK: every order completed and all telemetry arrived" in proc.stdout
    pages = [line for line in proc.stdout.splitlines() if ": live page http://127.0.0.1:" in line]
    assert len(pages) == 3, proc.stdout[:2000]  # one page URL per site
    final = next(line for line in proc.stdout.splitlines() if line.startswith("final:"))
    requested = int(final.split("orders ")[1].split("/")[1].split(" ")[0])
    assert requested >= 30  # the flow really ran at the requested rate
    # Every order passed the schemas and the core's JSONata transform audited each.
    audited = int(final.split("(")[1].split(" audited")[0])
    assert audited == requested, final
