"""Where the shared conformance suites and schemas live: ``../shared`` beside the
project (or ``$MESH_SHARED_DIR``). They are read in place, never copied here."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DIR = Path(
    os.environ.get("MESH_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared"
)
