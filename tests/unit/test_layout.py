"""The layers as the folder names promise: a pure core, and bridges only as plugins.

``mesh/core`` is pure (no event loop, no sockets, no database, no broker
library), and nothing under ``mesh/`` imports ``bridges``: the plugin
registry loads bridges through entry points. The scan reads import
statements (including those inside functions), not the text.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MESH = ROOT / "mesh"
CORE = MESH / "core"
IMPURE = ("asyncio", "aiohttp", "sqlite3", "paho", "nats", "bridges")


def imported_modules(text: str, package: tuple[str, ...]) -> set[str]:
    """Every module an import statement names (``from x import y``: x and x.y).

    ``package`` is the dotted path of the module's package, for relative imports.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, node.module] if node.module else parent)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    package = path.relative_to(ROOT).parent.parts
    return imported_modules(path.read_text(encoding="utf-8"), package)


def top_levels(names: set[str]) -> set[str]:
    return {name.split(".", 1)[0] for name in names}


def modules(folder: Path) -> list[Path]:
    found = sorted(folder.rglob("*.py"))
    assert found, folder
    return found


@pytest.mark.parametrize("path", modules(CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_is_pure(path: Path) -> None:
    bad = top_levels(imports_of(path)) & set(IMPURE)
    assert not bad, f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"


@pytest.mark.parametrize("path", modules(MESH), ids=lambda p: str(p.relative_to(ROOT)))
def test_mesh_never_imports_a_bridge(path: Path) -> None:
    assert "bridges" not in top_levels(imports_of(path))


def test_the_scan_sees_imports_in_functions_and_relative_ones() -> None:
    text = "def f():\n    import asyncio.events\n    from ..runtime import store\n"
    names = imported_modules(text, ("mesh", "core"))
    assert {"asyncio.events", "mesh.runtime", "mesh.runtime.store"} <= names
    assert top_levels(names) & set(IMPURE) == {"asyncio"}


STORE = MESH / "runtime" / "store"


@pytest.mark.parametrize(
    "path",
    [p for p in modules(MESH) if STORE not in p.parents],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_runtime_reaches_the_store_only_through_its_protocol(path: Path) -> None:
    """Only ``mesh/runtime/store`` knows a backend: a second one changes nothing else."""
    names = imports_of(path)
    backends = {n for n in names if n.startswith("mesh.runtime.store.")} - {
        f"mesh.runtime.store.{n}" for n in ("DeadLetter", "DedupKey", "Store", "open_store")
    }
    assert not backends, f"{path.relative_to(ROOT)} imports {', '.join(sorted(backends))}"
    assert "sqlite3" not in top_levels(names), f"{path.relative_to(ROOT)} imports sqlite3"
