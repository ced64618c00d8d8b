"""docker-compose.yml is checked against the Compose schema (no Docker engine here)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_matches_the_compose_spec(shared_dir: Path) -> None:
    schema = json.loads((shared_dir / "schemas" / "compose-spec.json").read_text())
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]
    assert errors == []


def test_compose_has_three_sites_with_health_checks_on_loopback() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    for site in ("shop", "core", "warehouse"):
        node = services[f"{site}-node"]
        assert node["command"] == ["run", f"config/{site}.yaml"]
        assert "healthcheck" in node
    assert "healthcheck" in services["shop-mosquitto"]
    assert "healthcheck" in services["core-nats"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
