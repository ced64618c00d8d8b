"""Reading a configuration file: strict YAML, and only ConfigErrors for any bad input."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mesh.cli import main
from mesh.config import json_schema, load_config, parse_config
from mesh.core.errors import ConfigError, ConfigErrors

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "config" / "core.yaml").read_text()
GOOD = 'node: {id: a, listen: "127.0.0.1:7401"}\nbrokers:\n  bus: {kind: memory}\n'

# Each alias level multiplies by nine: expanded, the last one holds 9**9 strings.
ALIAS_BOMB = "node: {id: a}\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def errors_of(tmp_path: Path, content: str | bytes) -> list[ConfigError]:
    f = tmp_path / "node.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(f, env={}, overrides={})
    return info.value.errors


def lines_of(tmp_path: Path, content: str | bytes) -> list[str]:
    return [str(e) for e in errors_of(tmp_path, content)]


# -- strict YAML -------------------------------------------------------------------


def test_duplicate_keys_are_errors_with_their_lines_at_every_level(tmp_path: Path) -> None:
    text = (
        "node:\n"
        "  id: a\n"
        "  region: eu\n"
        "  id: b\n"
        "brokers:\n"
        "  bus: {kind: memory, name: x, name: y}\n"
        "egress:\n"
        "  - {to: bus, topic: 'a/#', target: out}\n"
        "  - to: bus\n"
        "    topic: 'b/#'\n"
        "    target: out\n"
        "    on_error: {then: discard, then: pause}\n"
        "node: {id: c}\n"
    )
    assert lines_of(tmp_path, text) == [
        "node.id: duplicate key at line 4, column 3 (first at line 2, column 3)",
        "brokers.bus.name: duplicate key at line 6, column 32 (first at line 6, column 23)",
        "egress[1].on_error.then: duplicate key at line 12, column 31 "
        "(first at line 12, column 16)",
        "node: duplicate key at line 13, column 1 (first at line 1, column 1)",
    ]


def test_an_alias_bomb_is_refused_quickly_without_expanding_it(tmp_path: Path) -> None:
    start = time.perf_counter()
    assert lines_of(tmp_path, ALIAS_BOMB) == [
        "line 3, column 10: YAML aliases (*name) are not supported in a configuration file "
        "(write the value out in full)"
    ]
    assert time.perf_counter() - start < 1.0


def test_aliases_and_merge_keys_are_refused(tmp_path: Path) -> None:
    text = "defaults: &d {region: eu}\nnode:\n  <<: *d\n  id: a\n"
    assert lines_of(tmp_path, text) == [
        "line 3, column 7: YAML aliases (*name) are not supported in a configuration file "
        "(write the value out in full)"
    ]
    assert lines_of(tmp_path, "node:\n  <<: {region: eu}\n  id: a\n") == [
        "node: line 2, column 3: YAML merge keys (<<) are not supported in a configuration "
        "file (write the keys out in full)"
    ]
    # An anchor that is never used is harmless.
    assert load_config_text(tmp_path, "node: &n {id: a}\n").node.id == "a"


def test_keys_must_be_strings(tmp_path: Path) -> None:
    text = 'node: {id: a}\n1: x\nbrokers:\n  on: {kind: memory}\n  "off": {kind: memory}\n'
    assert lines_of(tmp_path, text) == [
        "line 2, column 1: key '1' is a number in YAML, not a string (quote it: \"1\")",
        "brokers: line 4, column 3: key 'on' is a boolean in YAML, not a string (quote it: \"on\")",
    ]
    assert lines_of(tmp_path, "node: {id: a}\n? [a, b]\n: 1\n") == [
        "line 2, column 3: a key must be a string, not a list"
    ]


def load_config_text(tmp_path: Path, text: str) -> object:
    f = tmp_path / "ok.yaml"
    f.write_text(text)
    return load_config(f, env={}, overrides={})


# -- nothing but ConfigErrors ------------------------------------------------------

CORPUS: dict[str, str | bytes] = {
    "empty": "",
    "only a comment": "# nothing here\n",
    "a list": "- node\n- id\n",
    "a scalar": "node\n",
    "a number": "42\n",
    "null document": "~\n",
    "tabs": "node:\n\tid: a\n",
    "unclosed flow": "node: [unclosed\n",
    "bad indentation": "node:\n  id: a\n region: b\n",
    "two documents": "node: {id: a}\n---\nnode: {id: b}\n",
    "non-UTF-8": b"node:\n  id: caf\xe9\n",
    "UTF-16": "node: {id: a}\n".encode("utf-16"),
    "NUL byte": "node: {id: a\x00}\n",
    "control character": "node: {id: \x07}\n",
    "python tag": "node: !!python/object/apply:os.system [echo hi]\n",
    "unknown tag": "node: !secret {id: a}\n",
    "bad explicit float": "node: {id: a}\nlimits: {batch_size: !!float many}\n",
    "bad explicit bool": "node: {id: a}\nstorage: {sync: !!bool maybe}\n",
    "bad timestamp": "node: {id: !!timestamp soon}\n",
    "bad binary": "node: {id: !!binary '%%%'}\n",
    "huge integer": "node: {id: a}\nlimits: {batch_size: " + "9" * 5000 + "}\n",
    "huge float": "node: {id: a}\nlimits: {batch_size: 1.0e+999}\n",
    "integer as id": "node: {id: 12345678901234567890}\n",
    "date as region": "node: {id: a, region: 2024-01-01}\n",
    "integer key": "1: x\nnode: {id: a}\n",
    "list key": "? [a, b]\n: x\n",
    "mapping key": "? {a: b}\n: x\n",
    "null key": "node: {id: a}\n~: x\n",
    "empty key": "node: {id: a}\n: x\n",
    "deep nesting": "node: {id: a}\negress: " + "[" * 500 + "]" * 500 + "\n",
    "deep filter": "node: {id: a}\nbrokers: {b: {kind: memory}}\negress:\n"
    "  - {to: b, topic: x, target: y, filter: " + "{not: " * 80 + "{}" + "}" * 80 + "}\n",
    "null sections": "node:\nbrokers:\npeers:\ningress:\negress:\nlimits:\n",
    "sections of the wrong type": "node: 5\nbrokers: [a]\npeers: 7\ningress: true\negress: x\n",
    "None in lists": "node: {id: a}\npeers: [~]\ningress: [~, ~]\negress: [null]\naccept: [~]\n",
    "unhashable peer id": "node: {id: a}\npeers: [{id: [1], url: 'ws://x', token: t}]\n",
    "peer id a mapping": "node: {id: a}\npeers:\n  - {id: {x: 1}}\n  - {id: {x: 1}}\n",
    "broker of the wrong type": "node: {id: a}\nbrokers: {b: 5, c: [1], d: {kind: [x]}}\n",
    "rule of the wrong type": "node: {id: a}\nbrokers: {b: {kind: mqtt}}\n"
    "ingress: [{from: [b], topic: {x: 1}, event: 5}]\negress: [{to: {b: 1}, topic: 5}]\n",
    "filter of the wrong type": "node: {id: a}\nbrokers: {b: {kind: memory}}\negress:\n"
    "  - {to: b, topic: 'a/#', target: y, filter: {exact: 5}}\n"
    "  - {to: b, topic: 'a/#', target: y, filter: [1, {sql: 5}, {any: x}]}\n",
    "interpolation in a key": "node: {id: a}\nbrokers: {'${B}': {kind: memory}}\n",
    "unset variable": "node: {id: '${NO_SUCH_VARIABLE}'}\n",
    "bad template": "node: {id: a}\nbrokers: {b: {kind: memory}}\n"
    "egress: [{to: b, topic: 'a/+', target: 'x/{9}/{'}]\n",
    "huge listen port": "node: {id: a, listen: '127.0.0.1:" + "9" * 5000 + "'}\n",
    "binary junk": bytes(random.Random(7).randrange(256) for _ in range(2000)),
}

LOCATED = re.compile(r"line \d+, column \d+: |cannot read file: |the file ")


def assert_clear(errors: list[ConfigError]) -> None:
    assert errors
    for e in errors:
        text = str(e)
        assert "\n" not in text and "Traceback" not in text, text
        assert e.path or LOCATED.match(e.message), f"neither a key path nor a line: {text}"
        assert len(text) < 400, text


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_broken_file_raises_only_config_errors(tmp_path: Path, name: str) -> None:
    assert_clear(errors_of(tmp_path, CORPUS[name]))


def test_unreadable_paths_raise_config_errors(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path, str(tmp_path / "a\0b.yaml")):
        with pytest.raises(ConfigErrors) as info:
            load_config(path, env={}, overrides={})
        (error,) = info.value.errors
        assert error.message.startswith("cannot read file: ")
    if Path("/dev/zero").exists():  # endless: read up to the limit, not forever
        with pytest.raises(ConfigErrors, match="the file is larger than 16 MiB"):
            load_config("/dev/zero", env={}, overrides={})
    assert lines_of(tmp_path, "node:\n  region: ¡olé! \xff\n".encode("latin-1")) == [
        "line 2, column 11: not UTF-8 text (byte 0xa1) (save the file as UTF-8)"
    ]
    # Columns count characters, not bytes.
    assert lines_of(tmp_path, "node:\n  region: olé ".encode() + b"\xff\n") == [
        "line 2, column 15: not UTF-8 text (byte 0xff) (save the file as UTF-8)"
    ]
    with pytest.raises(ConfigErrors, match="is a list; it must be a YAML mapping"):
        parse_config([1, 2], env={}, overrides={})


def test_some_messages_of_the_corpus(tmp_path: Path) -> None:
    assert lines_of(tmp_path, CORPUS["empty"]) == [
        "the file is empty; it must be a YAML mapping (start with node: ...)"
    ]
    assert lines_of(tmp_path, CORPUS["a list"]) == [
        "the file is a list; it must be a YAML mapping (start with node: ...)"
    ]
    assert lines_of(tmp_path, CORPUS["tabs"]) == [
        "line 2, column 1: invalid YAML: found character '\\t' that cannot start any token "
        "(YAML indents with spaces, not tabs)"
    ]
    assert lines_of(tmp_path, CORPUS["non-UTF-8"]) == [
        "line 2, column 10: not UTF-8 text (byte 0xe9) (save the file as UTF-8)"
    ]
    assert lines_of(tmp_path, CORPUS["huge integer"]) == [
        "line 2, column 22: integer too large (5000 digits)"
    ]
    assert lines_of(tmp_path, CORPUS["bad explicit float"]) == [
        "line 2, column 22: 'many' is not a valid !!float"
    ]
    assert lines_of(tmp_path, CORPUS["None in lists"]) == [
        "peers[0]: Input should be a valid dictionary or instance of Peer",
        "accept[0]: Input should be a valid dictionary or instance of AcceptPeer",
        "ingress[0]: Input should be a valid dictionary or instance of IngressRule",
        "ingress[1]: Input should be a valid dictionary or instance of IngressRule",
        "egress[0]: Input should be a valid dictionary or instance of EgressRule",
    ]
    # The branch of filter's union that fits the value reports; no type names in paths.
    assert lines_of(tmp_path, CORPUS["filter of the wrong type"]) == [
        "egress[1].filter[0]: Input should be a valid dictionary",
        "egress[0].filter: exact: expected a non-empty mapping of attribute to string",
    ]
    # An unset variable, not also the empty value it leaves.
    assert lines_of(tmp_path, CORPUS["unset variable"]) == [
        "node.id: environment variable NO_SUCH_VARIABLE is not set "
        "(export NO_SUCH_VARIABLE=... or write ${NO_SUCH_VARIABLE:-default})"
    ]
    assert lines_of(tmp_path, "node: {id: a, listen: nope}\n") == [
        "node.listen: expected host:port, got 'nope'"
    ]
    assert lines_of(tmp_path, CORPUS["deep nesting"]) == [
        "line 2, column 72: nested more than 64 levels deep"
    ]


def test_the_schema_keeps_its_shape() -> None:
    schema = json_schema()
    assert schema["title"] == "Event mesh gateway node configuration"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["node"]
    assert list(schema["properties"]) == [
        "node",
        "brokers",
        "peers",
        "accept",
        "ingress",
        "egress",
        "schemas",
        "limits",
        "outbox",
        "storage",
        "dlq",
        "api",
        "tracing",
        "logging",
    ]


def test_a_broker_named_like_a_kind_keeps_its_name_in_paths(tmp_path: Path) -> None:
    text = "node: {id: a}\nbrokers:\n  mqtt: {kind: mqtt, url: 'http://x'}\n"
    assert lines_of(tmp_path, text) == [
        "brokers.mqtt.url: String should match pattern '^mqtts?://'"
    ]


# Characters that break YAML structure, and fragments that change types.
_NOISE = [
    *"{}[]:,&*!|>-?'\"#%@` \n\t$0.",
    "${A}",
    "~",
    "true",
    "- ",
    ": ",
    "\n  ",
    "<<: ",
    "!!int ",
    "*a ",
    "&a ",
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 4), st.sampled_from(_NOISE)),
        min_size=1,
        max_size=6,
    )
)
@example(edits=[(0.875, 0, "{"), (0.7578125, 0, "\n  "), (0.7578125, 2, "\n  ")])
def test_a_mangled_example_raises_only_config_errors(
    tmp_path: Path, edits: list[tuple[float, int, str]]
) -> None:
    text = EXAMPLE
    for where, cut, insert in edits:
        i = int(where * len(text))
        text = text[:i] + insert + text[i + cut :]
    f = tmp_path / "mangled.yaml"
    f.write_text(text)
    try:
        load_config(f, env={}, overrides={})
    except ConfigErrors as exc:
        assert_clear(exc.errors)


# -- the command line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (
            "node:\n  id: a\n  listen: '127.0.0.1:1'\n  id: b\n",
            "  node.id: duplicate key at line 4, column 3 (first at line 2, column 3)",
        ),
        (
            ALIAS_BOMB,
            "  line 3, column 10: YAML aliases (*name) are not supported in a configuration file "
            "(write the value out in full)",
        ),
        (
            CORPUS["non-UTF-8"],
            "  line 2, column 10: not UTF-8 text (byte 0xe9) (save the file as UTF-8)",
        ),
    ],
    ids=["duplicate keys", "alias bomb", "not UTF-8"],
)
def test_mesh_validate_fails_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, line: str
) -> None:
    f = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    start = time.perf_counter()
    assert main(["validate", str(f)]) == 2
    assert time.perf_counter() - start < 1.0
    out = capsys.readouterr()
    assert out.err.splitlines() == [f"{f}: 1 error(s)", line]
    assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize("name", list(CORPUS))
def test_mesh_validate_and_run_print_errors_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    f = tmp_path / "bad.yaml"
    content = CORPUS[name]
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    for command in ("validate", "run"):
        assert main([command, str(f)]) == 2
        out = capsys.readouterr()
        assert out.out == ""
        head, *lines = out.err.splitlines()
        assert head == f"{f}: {len(lines)} error(s)"
        assert lines and all(line.startswith("  ") for line in lines)


def test_mesh_validate_reports_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text("node: {id: a, id: b}\n")
    assert main(["validate", str(bad), str(tmp_path / "missing.yaml"), str(good)]) == 2
    out = capsys.readouterr()
    assert out.out.startswith(f"{good}: ok (node a, 1 brokers")
    assert out.err.splitlines() == [
        f"{bad}: 1 error(s)",
        "  node.id: duplicate key at line 1, column 15 (first at line 1, column 8)",
        f"{tmp_path / 'missing.yaml'}: 1 error(s)",
        "  cannot read file: No such file or directory",
    ]


@pytest.mark.parametrize(
    ("broker", "group", "hint"),
    [
        ({"kind": "mqtt", "url": "mqtt://127.0.0.1:1883"}, "a+b", "share name"),
        ({"kind": "mqtt", "url": "mqtt://127.0.0.1:1883"}, "a/b", "share name"),
        ({"kind": "nats", "url": "nats://127.0.0.1:4222"}, "a b", "queue group"),
        ({"kind": "nats", "url": "nats://127.0.0.1:4222"}, "a>", "queue group"),
    ],
)
def test_a_queue_group_the_library_would_reject_fails_validation(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broker: dict[str, str],
    group: str,
    hint: str,
) -> None:
    """paho raised ValueError for a ``+`` in a share name outside the bridge's
    error mapping and stopped the node; now ``mesh validate`` refuses it first."""
    topic = "in/#" if broker["kind"] == "mqtt" else "in.>"
    f = tmp_path / "groups.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "node": {"id": "n", "data_dir": str(tmp_path / "d")},
                "brokers": {"b": broker},
                "ingress": [{"from": "b", "topic": topic, "queue_group": group}],
            }
        )
    )
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "ingress[0].queue_group" in err and hint in err, err
    assert "Traceback" not in err


# -- api.tokens --------------------------------------------------------------------


def test_api_tokens_are_secrets_checked_with_their_paths(
    tmp_path: Path,
) -> None:
    secret = "tok-" + "9f" * 16
    env = {"OPS_TOKEN": secret}
    # In a flow mapping ${VAR} must be quoted: '{' there is YAML syntax.
    text = (
        "node: {id: a}\n"
        "api:\n"
        "  tokens:\n"
        "    - {token: '${OPS_TOKEN}', scopes: [read]}\n"
        "    - {token: '${OPS_TOKEN}', scopes: [write]}\n"
        "    - {token: '  ', scopes: [admin]}\n"
        "    - {token: '${OPS_TOKEN}', scopes: []}\n"
        "    - token: ${OPS_TOKEN}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        load_config(bad, env=env, overrides={})
    lines = [str(e) for e in info.value.errors]
    assert lines == [
        "api.tokens[1].scopes[0]: Input should be 'publish', 'read' or 'admin'",
        "api.tokens[2].token: must not be empty",
        "api.tokens[3].scopes: List should have at least 1 item after validation, not 0",
        "api.tokens[4].scopes: Field required (this key is required)",
    ]
    assert not any(secret in line for line in lines)
    cfg_file = tmp_path / "ok.yaml"
    cfg_file.write_text("node: {id: a}\napi: {tokens: [{token: '${OPS_TOKEN}', scopes: [read]}]}\n")
    cfg = load_config(cfg_file, env=env, overrides={})
    assert cfg.api.tokens[0].token.get_secret_value() == secret
    assert secret not in repr(cfg) and secret not in cfg.model_dump_json()


def test_the_schema_shows_no_token() -> None:
    schema = json_schema()
    token = schema["$defs"]["ApiToken"]["properties"]["token"]
    assert token["writeOnly"] is True and "examples" not in token
    assert schema["properties"]["api"]["$ref"] == "#/$defs/ApiSettings"


def test_a_node_id_longer_than_the_link_protocol_allows_fails_validation(tmp_path: Path) -> None:
    """The link's hello takes ids of at most 63 characters: a longer one in the
    configuration could never link, so it is refused where it is written."""
    ok = "n" * 63
    assert parse_config({"node": {"id": ok}}, "<ok>", env={}, overrides={}).node.id == ok
    text = f"node: {{id: {'n' * 64}}}\n"
    [line] = lines_of(tmp_path, text)
    assert line.startswith("node.id: ")
