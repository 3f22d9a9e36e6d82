"""A real Prometheus scrapes edgeloop serve; PromQL for the request rate returns data."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from services.common.metrics import new_registry
from services.common.mqtt import MqttSettings
from services.inference.config import InferenceConfig
from services.inference.service import InferenceService
from tests.integration.test_inference_mqtt import V5Client
from tests.support import tiny_models as tm
from tests.support.prometheus import Prometheus
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_request_rate_and_model_info(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tiny = tm.build()
    keys = tm.keypair(tmp_path / "keys")
    b = tm.signed_bundle(tiny, tm.FORECAST, 3, keys, tmp_path / "bundles")
    tm.write_announcement(b)
    registry: CollectorRegistry = new_registry()  # with process metrics, as in production
    svc = InferenceService(InferenceConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        client_id=f"serve-{uuid.uuid4().hex[:6]}", http_port=0, public_key=keys.public_path,
        model_dir=tmp_path / "models", bundles=[b.path]), registry)
    svc.start()
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{svc.http_port}"])
    client = V5Client(mosquitto)
    try:
        prom.start()
        prom.wait_for_scrape(30)
        good = b.card.test_vectors[0].input
        base = f"http://127.0.0.1:{svc.http_port}"
        deadline = time.monotonic() + 30
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline and not result:
            for _ in range(20):
                client.request(tm.FORECAST, {"inputs": good})
                client.get()
            requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                          json={"instances": [good]}, timeout=5)
            result = prom.query(
                'sum by (transport) (rate(edgeloop_inference_requests_total'
                '{model="tiny-forecast",outcome="ok"}[5s])) > 0')
            time.sleep(0.5)
        assert {r["metric"]["transport"] for r in result} >= {"mqtt"}, result  # type: ignore[index]
        info = prom.query('edgeloop_model_info{name="tiny-forecast"}')
        assert info and info[0]["metric"]["version"] == "3"
        assert info[0]["metric"]["runtime"] == "litert"
        p50 = prom.query('histogram_quantile(0.5, sum by (le) (rate('
                         'edgeloop_inference_request_duration_seconds_bucket[10s])))')
        assert p50 and 0 < float(p50[0]["value"][1]) < 1.0
        assert prom.query("process_resident_memory_bytes")
    finally:
        client.close()
        prom.stop()
        svc.stop()
