"""Shared fixtures: real servers on free loopback ports, fresh metric registries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttSettings
from tests.support.servers import Mosquitto

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "data"


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh metrics registry, so counters start at zero in every test."""
    return CollectorRegistry(auto_describe=True)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real anonymous Mosquitto with TCP_NODELAY and persistence, on a free port."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_settings(mosquitto: Mosquitto) -> MqttSettings:
    return MqttSettings(host=mosquitto.host, port=mosquitto.port)
