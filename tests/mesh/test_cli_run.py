"""`mesh run` as a real process: serves, and stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mesh.testing import free_port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_mesh_run_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"node: {{id: solo, listen: '127.0.0.1:{port}', data_dir: '{tmp_path / 'data'}'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)], stderr=subprocess.PIPE, text=True
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
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "node solo stopped" in err
    assert "Traceback" not in err


def test_mesh_run_rejects_an_invalid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("node: {id: solo}\negress: [{to: nowhere, topic: a, target: b}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "egress[0].to: unknown broker 'nowhere'" in proc.stderr


def test_sighup_reloads_and_a_broken_file_keeps_the_running_configuration(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    base = f"node: {{id: solo, listen: '127.0.0.1:{port}', data_dir: '{tmp_path / 'data'}'}}\n"
    cfg.write_text(base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None
                assert time.monotonic() < deadline, "node did not come up"
                time.sleep(0.05)
        cfg.write_text(base + "accept: [{id: other, token: t}]\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        cfg.write_text(base + "egress: [{to: nowhere, topic: a, target: b}]\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "configuration reloaded" in err
    assert "reload refused, keeping the running configuration" in err
    assert "egress[0].to: unknown broker 'nowhere'" in err


def test_logging_json_writes_one_object_per_line_with_the_node(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        f"node: {{id: solo, listen: '127.0.0.1:{port}', data_dir: '{tmp_path / 'data'}'}}\n"
        "logging: {format: json, level: info}\n"
        "peers: [{id: nobody, url: 'ws://127.0.0.1:1/mesh', token: t}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", "run", str(cfg)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None
                assert time.monotonic() < deadline, "node did not come up"
                time.sleep(0.05)
        time.sleep(1.0)  # the dial to nobody fails at least once
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, err
    assert all(line["node"] == "solo" and line["level"] and line["message"] for line in lines)
    assert any("listening on" in line["message"] for line in lines), err
    assert any(line.get("peer") == "nobody" for line in lines), err
