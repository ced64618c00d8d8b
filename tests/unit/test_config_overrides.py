"""MESH_ environment overrides: merged into the file's data, then validated with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.cli import main
from mesh.config import load_config, parse_config
from mesh.config.models import MeshConfig
from mesh.core.errors import ConfigErrors

FILE = """\
node: {id: a, listen: "127.0.0.1:7401"}
brokers:
  plant: {kind: mqtt, url: "mqtt://${PLANT_HOST:-127.0.0.1}:1883"}
  CoreBus: {kind: nats}
peers:
  - {id: b, url: "ws://127.0.0.1:7402/mesh", token: "${PEER_TOKEN}"}
ingress:
  - {from: plant, topic: "sensors/+/temp"}
egress:
  - {to: plant, topic: "a/#", target: "out/{1}"}
  - {to: CoreBus, topic: "b/#", target: "in.{1}", mode: structured}
"""
ENV = {"PEER_TOKEN": "secret"}


def load(tmp_path: Path, overrides: dict[str, str], text: str = FILE) -> MeshConfig:
    f = tmp_path / "node.yaml"
    f.write_text(text)
    return load_config(f, env=ENV, overrides=overrides)


def errors(tmp_path: Path, overrides: dict[str, str], text: str = FILE) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, overrides, text)
    return [str(e) for e in info.value.errors]


def test_scalars_sections_and_list_entries_are_overridden(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "MESH_NODE__LISTEN": "0.0.0.0:9000",
            "MESH_BROKERS__PLANT__KEEPALIVE": "60",
            "MESH_BROKERS__COREBUS__JETSTREAM": "true",  # broker names match in any case
            "MESH_EGRESS__0__MODE": "data",
            "MESH_EGRESS__1__RETAIN": "yes",
            "MESH_INGRESS__0__FROM": "plant",  # the alias of from_
            "MESH_PEERS__0__OUTBOX__MAX_BYTES": "1024",  # a level the file does not have
            "MESH_LIMITS__BATCH_SIZE": "16",
        },
    )
    assert cfg.node.listen == "0.0.0.0:9000"
    assert cfg.brokers["plant"].keepalive == 60  # type: ignore[union-attr]
    assert cfg.brokers["CoreBus"].jetstream is True  # type: ignore[union-attr]
    assert [e.mode for e in cfg.egress] == ["data", "structured"]
    assert cfg.egress[1].retain is True
    assert cfg.peers[0].outbox is not None and cfg.peers[0].outbox.max_bytes == 1024
    assert cfg.peers[0].token.get_secret_value() == "secret"
    assert cfg.limits.batch_size == 16


def test_literal_fields_are_coerced_from_their_text(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "MESH_EGRESS__0__QOS": "0",
            "MESH_INGRESS__0__QOS": "0",
            "MESH_BROKERS__PLANT__PROTOCOL": "3.1.1",
            "MESH_EGRESS__0__MODE": "structured",
        },
    )
    assert cfg.egress[0].qos == 0 and cfg.ingress[0].qos == 0
    assert cfg.brokers["plant"].protocol == "3.1.1"  # type: ignore[union-attr]
    cfg = load(tmp_path, {"MESH_BROKERS__PLANT__PROTOCOL": "5"})
    assert cfg.brokers["plant"].protocol == 5  # type: ignore[union-attr]
    assert errors(tmp_path, {"MESH_EGRESS__0__QOS": "2"}) == [
        "egress[0].qos: Input should be 0 or 1 (from MESH_EGRESS__0__QOS)"
    ]


def test_structured_values_are_yaml_flow_and_strings_stay_strings(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "MESH_EGRESS__0__FILTER": "{exact: {type: com.example.a}}",
            "MESH_EGRESS__1__TARGET": "{node}.in.{1}",  # a template, not a mapping
            "MESH_BROKERS__PLANT__PASSWORD": "[not-a-list",
            "MESH_ACCEPT": "[{id: c, token: t}]",
        },
    )
    assert cfg.egress[0].filter == {"exact": {"type": "com.example.a"}}
    assert cfg.egress[1].target == "{node}.in.{1}"
    assert cfg.brokers["plant"].password.get_secret_value() == "[not-a-list"  # type: ignore[union-attr]
    assert [a.id for a in cfg.accept] == ["c"]
    # A whole section, refined by a more specific variable.
    cfg = load(tmp_path, {"MESH_NODE": "{id: z, region: eu}", "MESH_NODE__REGION": "us"})
    assert (cfg.node.id, cfg.node.region, cfg.node.listen) == ("z", "us", "127.0.0.1:7401")


def test_a_malformed_structured_value_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    (line,) = errors(tmp_path, {"MESH_NODE": "{bad json"})
    assert line.startswith("MESH_NODE: invalid YAML value: line 1, column 10: ")
    (line,) = errors(tmp_path, {"MESH_LIMITS": "{a: &x 1, b: *x}"})
    assert "MESH_LIMITS: invalid YAML value: line 1, column 14: YAML aliases (*name)" in line


def test_overrides_pass_the_cross_field_checks_and_name_the_variable(tmp_path: Path) -> None:
    assert errors(tmp_path, {"MESH_EGRESS__0__TO": "plnt"}) == [
        "egress[0].to: unknown broker 'plnt'; known: plant, CoreBus (from MESH_EGRESS__0__TO)"
    ]
    assert errors(tmp_path, {"MESH_EGRESS__0__MODE": "dta"}) == [
        "egress[0].mode: Input should be 'binary', 'structured' or 'data' "
        "(from MESH_EGRESS__0__MODE)"
    ]
    assert errors(tmp_path, {"MESH_PEERS__0__ID": "a"}) == [
        "peers[0].id: a node cannot peer with itself (from MESH_PEERS__0__ID)"
    ]
    # An error under an overridden section names the section's variable; the
    # file's own errors do not.
    lines = errors(
        tmp_path,
        {"MESH_BROKERS__PLANT": "{kind: mqtt, url: 'http://x'}"},
        FILE.replace("mode: structured", "mode: binery"),
    )
    assert sorted(lines) == [
        "brokers.plant.url: String should match pattern '^mqtts?://' (from MESH_BROKERS__PLANT)",
        "egress[1].mode: Input should be 'binary', 'structured' or 'data'",
    ]
    # The hint of a check is kept after the variable.
    assert errors(tmp_path, {"MESH_NODE__ID": "Node_A"}) == [
        "node.id: String should match pattern '^[a-z0-9][a-z0-9-]{0,62}$' "
        "(from MESH_NODE__ID; ids use lower-case letters, digits and '-', at most 63)"
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "MESH_FOO",
            "MESH_FOO: names no configuration key (the top level has no key 'foo'; known: "
            "accept, api, brokers, dlq, egress, ingress, limits, logging, node, outbox, peers…)",
        ),
        (
            "MESH_NODE__LISTN",
            "MESH_NODE__LISTN: names no configuration key "
            "(node has no key 'listn'; known: canary_interval, data_dir, id, listen, region, tls)",
        ),
        (
            "MESH_BROKERS__COREBUS__KEEPALIVE",  # an MQTT key on a NATS broker
            "MESH_BROKERS__COREBUS__KEEPALIVE: names no configuration key (brokers.CoreBus has "
            "no key 'keepalive'; known: creds, jetstream, kind, nkey, password, tls, token, url, "
            "user)",
        ),
        (
            "MESH_EGRESS__2__MODE",
            "MESH_EGRESS__2__MODE: index 2 is past the end of egress (2 entries) "
            "(an override changes an entry of the file; add new entries in the file)",
        ),
        (
            "MESH_ACCEPT__0__ID",
            "MESH_ACCEPT__0__ID: index 0 is past the end of accept (0 entries) "
            "(an override changes an entry of the file; add new entries in the file)",
        ),
        (
            "MESH_EGRESS__MODE",
            "MESH_EGRESS__MODE: egress is a list; the next level must be an index "
            "(as in MESH_EGRESS__0__...)",
        ),
        (
            "MESH_NODE__ID__X",
            "MESH_NODE__ID__X: node.id is a string in the configuration, not a mapping "
            "(override the whole value instead)",
        ),
        (
            "MESH_NODE___ID",
            "MESH_NODE___ID: names no configuration key "
            "(node has no key '_id'; known: canary_interval, data_dir, id, listen, region, tls)",
        ),
        (
            "MESH_NODE____ID",
            "MESH_NODE____ID: names no configuration key "
            "(levels are separated by two underscores, as in MESH_NODE__LISTEN)",
        ),
    ],
)
def test_a_variable_that_names_no_key_is_an_error_naming_it(
    tmp_path: Path, name: str, expected: str
) -> None:
    assert errors(tmp_path, {name: "x"}) == [expected]


def test_exempt_variables(tmp_path: Path) -> None:
    text = FILE + "# the demo exports ${MESH_TOKEN}\n"
    cfg = load(
        tmp_path,
        {
            "MESH_API_TOKEN": "cli",  # the CLI's own
            "MESH_SHARED_DIR": "/srv/shared",  # the test harness's
            "MESH_TOKEN": "t",  # referenced by the file (in a comment, even)
            "MESHY": "not ours",
        },
        text,
    )
    assert cfg.node.id == "a"
    # parse_config finds references in the values.
    data: dict[str, Any] = {"node": {"id": "a", "data_dir": "${MESH_DATA:-var}/a"}}
    env = {"MESH_DATA": "/d"}
    assert parse_config(data, env=env, overrides=env).node.data_dir == Path("/d/a")


def test_an_override_replaces_a_value_whose_variable_is_unset(tmp_path: Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(FILE)
    with pytest.raises(ConfigErrors, match="environment variable PEER_TOKEN is not set"):
        load_config(f, env={}, overrides={})
    cfg = load_config(f, env={}, overrides={"MESH_PEERS__0__TOKEN": "from-env"})
    assert cfg.peers[0].token.get_secret_value() == "from-env"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    lines = errors(
        tmp_path,
        {"MESH_FOO": "1", "MESH_EGRESS__0__TO": "nowhere", "MESH_LIMITS__BATCH_SIZE": "0"},
    )
    assert sorted(lines) == [
        "MESH_FOO: names no configuration key (the top level has no key 'foo'; known: "
        "accept, api, brokers, dlq, egress, ingress, limits, logging, node, outbox, peers…)",
        "egress[0].to: unknown broker 'nowhere'; known: plant, CoreBus (from MESH_EGRESS__0__TO)",
        "limits.batch_size: Input should be greater than or equal to 1 "
        "(from MESH_LIMITS__BATCH_SIZE)",
    ]


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(FILE)
    monkeypatch.setenv("PEER_TOKEN", "s")
    monkeypatch.setenv("MESH_EGRESS__0__MODE", "data")
    assert load_config(f).egress[0].mode == "data"
    assert load_config(f, overrides={}).egress[0].mode == "binary"


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "MESH_NODE__LISTN",
            "0.0.0.0:1",
            "  MESH_NODE__LISTN: names no configuration key (node has no key 'listn'; known: "
            "canary_interval, data_dir, id, listen, region, tls)",
        ),
        (
            "MESH_NODE",
            "{bad json",
            "  MESH_NODE: invalid YAML value: line 1, column 10: expected ',' or '}', but got "
            "'<stream end>' (a value starting with { or [ is read as YAML flow)",
        ),
        (
            "MESH_EGRESS__0__MODE",
            "dta",
            "  egress[0].mode: Input should be 'binary', 'structured' or 'data' "
            "(from MESH_EGRESS__0__MODE)",
        ),
    ],
)
def test_mesh_validate_names_a_bad_or_unknown_variable_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    line: str,
) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(FILE)
    monkeypatch.setenv("PEER_TOKEN", "s")
    monkeypatch.setenv(name, value)
    assert main(["validate", str(f)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [f"{f}: 1 error(s)", line]
