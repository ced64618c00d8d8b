"""`mesh run` as a real process takes MESH_ overrides from its environment, and
refuses a bad variable or a bad file with one line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mesh.testing import free_port


def test_an_override_moves_the_node_and_harness_variables_are_left_alone(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    # The file's own port is taken by nothing; the override is what must win.
    cfg.write_text(f"node: {{id: solo, listen: '127.0.0.1:1', data_dir: '{tmp_path / 'd'}'}}\n")
    env = {
        **os.environ,
        "MESH_NODE__LISTEN": f"127.0.0.1:{port}",
        "MESH_SHARED_DIR": str(tmp_path),
        "MESH_API_TOKEN": "cli-token",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "node did not come up"
                time.sleep(0.05)
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def run(cfg: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return subprocess.run(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, **extra},
    )


def test_a_variable_that_names_no_key_stops_mesh_run_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"node: {{id: solo, data_dir: '{tmp_path / 'd'}'}}\n")
    proc = run(cfg, MESH_NODE__LISTN="0.0.0.0:7401")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{cfg}: 1 error(s)",
        "  MESH_NODE__LISTN: names no configuration key "
        "(node has no key 'listn'; known: canary_interval, data_dir, id, listen, region, tls)",
    ]


def test_an_alias_bomb_stops_mesh_run_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bomb.yaml"
    levels = "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]\n" for i in range(1, 9))
    cfg.write_text(
        "node: {id: solo}\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + levels
    )
    start = time.monotonic()
    proc = run(cfg)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{cfg}: 1 error(s)",
        "  line 3, column 10: YAML aliases (*name) are not supported in a configuration file "
        "(write the value out in full)",
    ]
    assert time.monotonic() - start < 10  # a fresh interpreter's start-up included
