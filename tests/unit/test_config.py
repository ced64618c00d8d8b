"""Configuration: examples validate, broken files report every error with its path."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from mesh.cli import main
from mesh.config import load_config, parse_config
from mesh.core.errors import ConfigErrors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))

BROKEN = """
node: {id: Factory_EU, listen: "127.0.0.1:7401", data_dir: var/x}
brokers:
  plant: {kind: mqtt, url: "mqtt://127.0.0.1:1883", protocol: 3.1.1}
  core: {kind: nats, url: "nats://127.0.0.1:4222"}
  web: {kind: http}
ingress:
  - from: plnt
    topic: sensors/+/temperature
  - from: core
    topic: sensors.*.temperature
    mesh_topic: "x/{2}"
egress:
  - to: cor
    topic: "+/sensors/#"
    target: telemetry.{node}.{subject}
  - to: plant
    topic: "a/#"
    target: "out/{1}"
    mode: binary
  - to: core
    topic: "a/#"
    filter: {prefx: {type: com.example.}}
    target: "y.{1}"
    colour: red
"""


def test_there_are_example_configs() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_broken_file_reports_every_error_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text(BROKEN)
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    expected = [
        "node.id: String should match pattern",
        "ingress[0].from: unknown broker 'plnt'; known: plant, core, web",
        "ingress[1].mesh_topic: {2} refers to wildcard 2 but the pattern has 1",
        "egress[0].to: unknown broker 'cor'; known: plant, core, web",
        "egress[1].mode: binary mode is not available on broker 'plant' (MQTT 3.1.1) "
        "(use data or structured)",
        "egress[2].filter: unknown filter dialect 'prefx'",
        "egress[2].colour: unknown key",
    ]
    for line in expected:
        assert line in err, f"missing {line!r} in:\n{err}"
    assert "7 error(s)" in err


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="cannot read file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed\n")
    with pytest.raises(ConfigErrors, match="invalid YAML"):
        load_config(bad)


def test_interpolation_and_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {
        "node": {"id": "a", "listen": "127.0.0.1:${PORT:-7000}"},
        "brokers": {"plant": {"kind": "mqtt", "url": "mqtt://${HOST}:1883"}},
        "peers": [{"id": "b", "url": "ws://h/mesh", "token": "${SECRET}"}],
    }
    cfg = parse_config(data, env={"HOST": "10.0.0.1", "SECRET": "s3"})
    assert cfg.node.listen == "127.0.0.1:7000"
    assert cfg.brokers["plant"].url == "mqtt://10.0.0.1:1883"
    assert cfg.peers[0].token.get_secret_value() == "s3"
    with pytest.raises(ConfigErrors, match=r"peers\[0\].token: environment variable SECRET"):
        parse_config(data, env={"HOST": "x"})
    assert parse_config({"node": {"id": "a", "region": "$${literal}"}}, env={}).node.region == (
        "${literal}"
    )
    monkeypatch.setenv("MESH_NODE__LISTEN", "0.0.0.0:9999")
    monkeypatch.setenv("MESH_BROKERS__PLANT__URL", "mqtt://override:1883")
    cfg = parse_config(data, env={"HOST": "x", "SECRET": "s"})
    assert cfg.node.listen == "0.0.0.0:9999"
    assert cfg.brokers["plant"].url == "mqtt://override:1883"


def test_schema_command_validates_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], f"{path.name}: {[e.message for e in errors]}"
    # The schema is strict: an unknown key fails it.
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["colour"] = "red"
    assert list(validator.iter_errors(doc))


def test_secrets_are_never_shown_by_the_loaded_configuration() -> None:
    secrets = ["peer-tok-1", "accept-tok-2", "mqtt-pw-3", "nats-tok-4", "nats-pw-5", "hook-6"]
    data = {
        "node": {"id": "a"},
        "brokers": {
            "plant": {
                "kind": "mqtt",
                "url": "mqtt://h:1883",
                "username": "u",
                "password": secrets[2],
            },
            "core": {"kind": "nats", "url": "nats://h:4222", "token": secrets[3]},
            "core2": {"kind": "nats", "url": "nats://h:4222", "user": "u", "password": secrets[4]},
            "web": {"kind": "http", "headers": {"authorization": f"Bearer {secrets[5]}"}},
        },
        "peers": [{"id": "b", "url": "ws://h:7401/mesh", "token": secrets[0]}],
        "accept": [{"id": "c", "token": secrets[1]}],
    }
    cfg = parse_config(data, "<secrets>", env={}, overrides={})
    shown = [repr(cfg), str(cfg), cfg.model_dump_json(), json.dumps(cfg.model_dump(mode="json"))]
    for text in shown:
        for secret in secrets:
            assert secret not in text
    assert cfg.peers[0].token.get_secret_value() == secrets[0]  # still usable
