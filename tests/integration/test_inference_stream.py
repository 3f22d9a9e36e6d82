"""The live stream against a real Mosquitto: forecast alerts with debounce and
hysteresis, device flags, data quality, classification events, edge forwarding."""

from __future__ import annotations

import json
import math
import queue
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttSettings
from services.contract import topics
from services.contract.models import Reading
from services.inference.config import (
    AlertSettings,
    ForwardSettings,
    InferenceConfig,
    StreamSettings,
)
from services.inference.service import InferenceService
from tests.integration.test_inference_mqtt import V5Client
from tests.support import tiny_models as tm
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration
SITE = "lab"


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


@pytest.fixture
def service(mosquitto: Mosquitto, tiny: tm.TinyModels, tmp_path: Path) -> Iterator[
    InferenceService
]:
    keys = tm.keypair(tmp_path / "keys")
    paths = []
    for name in (tm.FORECAST, tm.CLASSIFY):
        b = tm.signed_bundle(tiny, name, 1, keys, tmp_path / "bundles")
        tm.write_announcement(b)
        paths.append(b.path)
    config = InferenceConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        client_id=f"serve-{uuid.uuid4().hex[:6]}", http_port=0, public_key=keys.public_path,
        model_dir=tmp_path / "models", bundles=paths,
        stream=StreamSettings(
            site=SITE, classify_hop=4,
            alerts=AlertSettings(relative=0.05, raise_after=3, clear_after=3, stuck_after=20,
                                 drift_window=50),
            forward=ForwardSettings(enabled=True, summary_interval_s=3600, context=5),
        ),
    )
    svc = InferenceService(config, CollectorRegistry())
    svc.start()
    assert svc.client.wait_connected(10)
    try:
        yield svc
    finally:
        svc.stop()


class Watcher:
    def __init__(self, mosquitto: Mosquitto, *filters: str) -> None:
        self.got: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{uuid.uuid4().hex[:6]}")
        self.c.on_message = lambda _c, _u, m: self.got.put((m.topic, json.loads(m.payload)))
        self.c.connect(mosquitto.host, mosquitto.port)
        self.c.loop_start()
        for f in filters:
            self.c.subscribe(f, qos=1)
        time.sleep(0.3)

    def publish_readings(self, device: str, rows: list[dict[str, float]], *,
                         interval_s: float = 1.0, flags: dict[int, tuple[str, ...]] | None = None,
                         ts_gap: dict[int, float] | None = None) -> None:
        now = time.time_ns() - int(len(rows) * interval_s * 1e9) - 10**11
        t = now
        for i, values in enumerate(rows):
            t += int((ts_gap or {}).get(i, interval_s) * 1e9)
            r = Reading(device=device, site=SITE, ts=t, seq=i, values=values,
                        flags=(flags or {}).get(i, ()))
            self.c.publish(topics.telemetry(SITE, device), r.to_json(), qos=1)

    def drain(self, wait: float = 0.5) -> list[tuple[str, dict[str, object]]]:
        out = []
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self.got.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def settle(svc: InferenceService, watcher: Watcher) -> list[tuple[str, dict[str, object]]]:
    time.sleep(0.3)
    assert svc.stream is not None and svc.stream.wait_idle(20)
    return watcher.drain(0.5)


def temp(i: int) -> float:
    return 22.0 + 3.0 * math.sin(i / 25.0)


def test_forecast_alert_debounced_and_cleared_with_forwarding(
    service: InferenceService, mosquitto: Mosquitto
) -> None:
    w = Watcher(mosquitto, f"edgeloop/v1/{SITE}/+/alert", "edgeloop/v1/upstream/#")
    try:
        rows = [{"temp": temp(i)} for i in range(120)]
        rows[40] = {"temp": temp(40) * 1.3}  # one spike: not a fire
        for i in range(70, 80):  # a fire: ten readings 30 % hot
            rows[i] = {"temp": temp(i) * 1.3}
        w.publish_readings("dev1", rows)
        msgs = settle(service, w)
        alerts = [m for t, m in msgs if t.endswith("/alert") and "upstream" not in t]
        fc = [a for a in alerts if a["kind"] == "forecast_deviation"]
        assert [a["state"] for a in fc] == ["raised", "cleared"], [
            (a["state"], a["message"], a["ts"]) for a in fc]
        assert fc[0]["id"] == fc[1]["id"] and fc[0]["device"] == "dev1"
        assert fc[0]["model"] == tm.FORECAST and fc[0]["field"] == "temp"
        raised_value, expected = float(fc[0]["value"]), float(fc[0]["expected"])  # type: ignore[arg-type]
        assert abs(raised_value - expected) > 0.05 * expected
        # The fire also leaves the training range: a data-quality alert.
        assert any(a["kind"] == "out_of_range" and a["state"] == "raised" for a in alerts)
        reg = service.registry
        assert reg.get_sample_value("edgeloop_alerts_total",
                                    {"kind": "forecast_deviation"}) == 1.0
        assert reg.get_sample_value("edgeloop_stream_readings_total") == 120.0
        # Edge filtering: alerts with context went upstream, far fewer bytes than raw.
        up = [(t, m) for t, m in msgs if t.startswith("edgeloop/v1/upstream/")]
        assert any(t.endswith("/telemetry") and m["schema"] == "edgeloop.readings/1"
                   for t, m in up)
        assert service.forwarder is not None and service.forwarder.flush() == 1
        summary = [m for t, m in w.drain(1.0) if t.endswith("/summary")]
        assert summary and summary[0]["fields"]["temp"]["count"] == 120  # type: ignore[index]
        raw = reg.get_sample_value("edgeloop_forward_bytes_total", {"direction": "raw"})
        fwd = reg.get_sample_value("edgeloop_forward_bytes_total", {"direction": "forwarded"})
        assert raw and fwd and fwd < raw / 2
        # A forecaster asked about the device's current window over MQTT.
        client = V5Client(mosquitto)
        try:
            client.request(tm.FORECAST, {"device": "dev1", "site": SITE})
            _, reply = client.get()
        finally:
            client.close()
        assert reply["schema"] == "edgeloop.infer-response/1"
        assert float(reply["outputs"][0]) == pytest.approx(temp(120), abs=0.5)  # type: ignore[index]
    finally:
        w.close()


def test_device_flags_quality_checks_and_events(
    service: InferenceService, mosquitto: Mosquitto
) -> None:
    w = Watcher(mosquitto, f"edgeloop/v1/{SITE}/+/alert", f"edgeloop/v1/{SITE}/+/event")
    try:
        rows = [{"temp": temp(i)} for i in range(60)]
        w.publish_readings("flagged", rows, flags={30: ("anomaly",)})
        stuck = [{"temp": temp(i)} for i in range(10)] + [{"temp": 23.5}] * 30
        w.publish_readings("stuck", stuck)
        w.publish_readings("gappy", [{"temp": temp(i)} for i in range(20)], ts_gap={10: 60.0})
        rng = np.random.default_rng(1)
        accel = [{"aX": float(x), "aY": float(y), "aZ": 9.81 + float(z)}
                 for x, y, z in 0.2 * rng.standard_normal((40, 3))]
        accel += [{"aX": float(x), "aY": float(y), "aZ": float(z)}
                  for x, y, z in 0.3 * rng.standard_normal((40, 3))]
        w.publish_readings("phone", accel, interval_s=0.02)
        msgs = settle(service, w)
        alerts = [(m["device"], m["kind"], m["state"]) for t, m in msgs if t.endswith("/alert")]
        assert ("flagged", "device_anomaly", "raised") in alerts
        assert ("flagged", "device_anomaly", "cleared") in alerts
        assert ("stuck", "stuck_sensor", "raised") in alerts
        assert ("gappy", "gap", "raised") in alerts
        assert not any(d == "flagged" and k == "forecast_deviation" for d, k, _ in alerts)
        events = [m for t, m in msgs if t.endswith("/event")]
        labels = [e["label"] for e in events]
        # One freefall event for the whole fall; windows straddling the change may read as
        # shaking, but nothing fires while the phone lies still (readings 0-39).
        assert labels.count("freefall") == 1, labels
        assert all(int(e["window_end_seq"]) >= 40 for e in events), events  # type: ignore[call-overload]
        events = [e for e in events if e["label"] == "freefall"]
        assert events[0]["device"] == "phone" and float(events[0]["confidence"]) >= 0.6  # type: ignore[arg-type]
        reg = service.registry
        assert reg.get_sample_value("edgeloop_events_total", {"label": "freefall"}) == 1.0
        assert (reg.get_sample_value("edgeloop_data_quality_issues_total",
                                     {"kind": "stuck_sensor"}) or 0) >= 1
    finally:
        w.close()
