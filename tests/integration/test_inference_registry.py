"""The real loop: the registry signs and announces, edgeloop serve verifies and swaps;
a rollback in the registry rolls every edge back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.common.mqtt import MqttSettings
from services.inference.config import InferenceConfig
from services.inference.service import InferenceService
from services.modelkit.bundle import write_bundle
from services.trainer.registry.client import RegistryClient
from services.trainer.registry.config import HttpSettings, RegistrySettings
from services.trainer.registry.server import RegistryServer
from tests.integration.test_inference_updates import serving_version, wait_for
from tests.support import tiny_models as tm
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration


def test_registry_publish_update_and_rollback_reach_the_edge(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tiny = tm.build()
    keys = tm.keypair(tmp_path / "keys")
    mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    registry = RegistryServer(RegistrySettings(
        root=tmp_path / "registry", signing_key=keys.private_path, token=SecretStr("t0ken"),
        http=HttpSettings(port=0), mqtt=mqtt, mqtt_client_id=f"reg-{uuid.uuid4().hex[:6]}",
    ), CollectorRegistry())
    registry.start()
    edge = InferenceService(InferenceConfig(
        mqtt=mqtt, client_id=f"serve-{uuid.uuid4().hex[:6]}", http_port=0,
        public_key=keys.public_path, model_dir=tmp_path / "edge-models", models=[tm.FORECAST],
        cache_poll_s=0.2), CollectorRegistry())
    edge.start()
    try:
        with RegistryClient(registry.base_url, "t0ken") as client:
            # Unsigned trainer outputs: the registry versions and signs them.
            v1 = write_bundle(tmp_path / "v1.tar", tiny.card(tm.FORECAST),
                              tiny.files(tm.FORECAST))
            v2 = write_bundle(tmp_path / "v2.tar",
                              tiny.card(tm.FORECAST_INT8).model_copy(
                                  update={"name": tm.FORECAST}),
                              tiny.files(tm.FORECAST_INT8))
            assert client.publish(v1).version == 1
            assert wait_for(lambda: serving_version(edge, tm.FORECAST) == 1)
            assert client.publish(v2).version == 2
            assert wait_for(lambda: serving_version(edge, tm.FORECAST) == 2)
            assert edge.models.get(tm.FORECAST).card.input.dtype == "int8"
            client.rollback(tm.FORECAST)
            assert wait_for(lambda: serving_version(edge, tm.FORECAST) == 1)
        assert edge.registry.get_sample_value(
            "edgeloop_model_loads_total", {"name": tm.FORECAST}) == 3
        assert edge.registry.get_sample_value(
            "edgeloop_model_load_failures_total", {"name": tm.FORECAST, "reason": "signature"}
        ) is None
    finally:
        edge.stop()
        registry.stop()
