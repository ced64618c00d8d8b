"""Shared fixtures: real brokers on free ports, nodes, and small helpers.

Brokers are real Mosquitto and nats-server processes; a missing binary fails
the test with the command that installs it (see mesh.testing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.testing import Mosquitto, NatsServer
from tests.shared import SHARED_DIR


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def mosquitto_b(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "mosquitto-b")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(workdir=tmp_path / "nats")
    server.start()
    yield server
    server.close()


@pytest.fixture
def nats_server_b(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(workdir=tmp_path / "nats-b")
    server.start()
    yield server
    server.close()


@pytest.fixture
def shared_dir() -> Path:
    """../shared (or $MESH_SHARED_DIR): conformance suites and schemas, never copied here."""
    path = SHARED_DIR
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the conformance data must sit beside the project")
    return path
