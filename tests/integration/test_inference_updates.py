"""Hot model updates from retained announcements: verified, tested, swapped with no
request lost; bad bundles refused while the old model keeps serving; offline restart;
rollback; a broker restart mid-load."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttSettings
from services.contract.topics import model_announce
from services.inference.config import InferenceConfig
from services.inference.service import InferenceService
from services.modelkit.signing import KeyPair
from tests.integration.test_inference_mqtt import V5Client
from tests.support import tiny_models as tm
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return tm.keypair(tmp_path / "keys")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tm.BundleServer]:
    d = tmp_path / "registry"
    d.mkdir()
    with tm.BundleServer(d) as srv:
        yield srv


def announce(mosquitto: Mosquitto, bundle: tm.SignedBundle, url: str, **update: object) -> None:
    ann = bundle.announcement(url).model_copy(update=update)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"reg-{uuid.uuid4().hex[:6]}")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        pub.publish(model_announce(bundle.card.name), ann.to_json(), qos=1,
                    retain=True).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()


def publish_to(served: tm.BundleServer, bundle: tm.SignedBundle) -> str:
    shutil.copy(bundle.path, served.directory / bundle.path.name)
    return served.url(bundle.path.name)


def make_service(mosquitto: Mosquitto, keys: KeyPair, model_dir: Path,
                 registry: CollectorRegistry | None = None, **extra: object) -> InferenceService:
    config = InferenceConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        client_id=f"serve-{uuid.uuid4().hex[:6]}", http_port=0,
        public_key=keys.public_path, model_dir=model_dir, cache_poll_s=0.2, **extra,  # type: ignore[arg-type]
    )
    svc = InferenceService(config, registry or CollectorRegistry())
    svc.start()
    return svc


def wait_for(pred: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def metric(svc: InferenceService, name: str, labels: dict[str, str]) -> float:
    return svc.registry.get_sample_value(name, labels) or 0.0


def serving_version(svc: InferenceService, name: str) -> int | None:
    return svc.models.get(name).version if svc.models.has(name) else None


def test_hot_swap_with_requests_in_flight_loses_none_and_bad_updates_are_refused(
    mosquitto: Mosquitto, tiny: tm.TinyModels, keys: KeyPair, served: tm.BundleServer,
    tmp_path: Path,
) -> None:
    out = tmp_path / "bundles"
    v1 = tm.signed_bundle(tiny, tm.FORECAST, 1, keys, out)
    announce(mosquitto, v1, publish_to(served, v1))
    svc = make_service(mosquitto, keys, tmp_path / "models")
    client = V5Client(mosquitto)
    try:
        assert wait_for(lambda: serving_version(svc, tm.FORECAST) == 1)
        good = v1.card.test_vectors[0].input
        # v2: the int8 model under the same name (different outputs, same interface).
        v2 = tm.signed_bundle(tiny, tm.FORECAST_INT8, 2, keys, out,
                              card_update={"name": tm.FORECAST})
        sent = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal sent
            while not stop.is_set() and sent < 3000:
                client.request(tm.FORECAST, {"inputs": good}, corr=str(sent).encode())
                sent += 1
                if sent % 20 == 0:
                    time.sleep(0.002)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.2)
        announce(mosquitto, v2, publish_to(served, v2))
        assert wait_for(lambda: serving_version(svc, tm.FORECAST) == 2)
        time.sleep(0.2)
        stop.set()
        t.join()
        versions: dict[object, int] = {}
        corrs = set()
        for _ in range(sent):
            corr, reply = client.get(timeout=20)
            corrs.add(corr)
            assert reply["schema"] == "edgeloop.infer-response/1", reply
            versions[reply["version"]] = versions.get(reply["version"], 0) + 1
        assert len(corrs) == sent  # every request answered exactly once
        assert versions.get(1, 0) > 0 and versions.get(2, 0) > 0, versions
        assert metric(svc, "edgeloop_model_loads_total", {"name": tm.FORECAST}) == 2

        # A wrongly signed v3 (another key): refused, v2 keeps serving.
        other = tm.keypair(tmp_path / "other-keys")
        v3 = tm.signed_bundle(tiny, tm.FORECAST, 3, other, out)
        announce(mosquitto, v3, publish_to(served, v3), key_id=keys.key_id)
        assert wait_for(lambda: metric(svc, "edgeloop_model_load_failures_total",
                                       {"name": tm.FORECAST, "reason": "signature"}) == 1)
        # Corrupt bytes under a correct signature of other bytes: sha256 refused.
        v4 = tm.signed_bundle(tiny, tm.FORECAST, 4, keys, out)
        url4 = publish_to(served, v4)
        data = bytearray((served.directory / v4.path.name).read_bytes())
        data[2000] ^= 0xFF
        (served.directory / v4.path.name).write_bytes(bytes(data))
        announce(mosquitto, v4, url4)
        assert wait_for(lambda: metric(svc, "edgeloop_model_load_failures_total",
                                       {"name": tm.FORECAST, "reason": "sha256"}) == 1)
        # Test vectors that the model does not meet: refused after loading.
        v5 = tm.signed_bundle(tiny, tm.FORECAST, 5, keys, out, card_update={
            "test_vectors": [v1.card.test_vectors[0].model_copy(update={"output": [99.0]})]})
        announce(mosquitto, v5, publish_to(served, v5))
        assert wait_for(lambda: metric(svc, "edgeloop_model_load_failures_total",
                                       {"name": tm.FORECAST, "reason": "test_vectors"}) == 1)
        # Registry down: the download fails, is counted and retried; nothing changes.
        v6 = tm.signed_bundle(tiny, tm.FORECAST, 6, keys, out)
        announce(mosquitto, v6, "http://127.0.0.1:9/nothing-listens-here.tar")
        assert wait_for(lambda: metric(svc, "edgeloop_model_load_failures_total",
                                       {"name": tm.FORECAST, "reason": "download"}) >= 1)
        assert serving_version(svc, tm.FORECAST) == 2
        client.request(tm.FORECAST, {"inputs": good}, corr=b"still")
        corr, reply = client.get()
        assert corr == b"still" and reply["version"] == 2
        base = f"http://127.0.0.1:{svc.http_port}"
        assert requests.get(f"{base}/healthz", timeout=5).ok
        assert 'edgeloop_model_info{name="tiny-forecast",runtime="litert",version="2"} 1.0' \
            in requests.get(f"{base}/metrics", timeout=5).text
    finally:
        client.close()
        svc.stop()


def test_restart_without_network_serves_last_good_model_and_rollback_is_one_command(
    mosquitto: Mosquitto, tiny: tm.TinyModels, keys: KeyPair, served: tm.BundleServer,
    tmp_path: Path,
) -> None:
    out, model_dir = tmp_path / "bundles", tmp_path / "models"
    v1 = tm.signed_bundle(tiny, tm.FORECAST, 1, keys, out)
    v2 = tm.signed_bundle(tiny, tm.FORECAST_INT8, 2, keys, out, card_update={"name": tm.FORECAST})
    svc = make_service(mosquitto, keys, model_dir)
    try:
        announce(mosquitto, v1, publish_to(served, v1))
        assert wait_for(lambda: serving_version(svc, tm.FORECAST) == 1)
        announce(mosquitto, v2, publish_to(served, v2))
        assert wait_for(lambda: serving_version(svc, tm.FORECAST) == 2)
    finally:
        svc.stop()
    # No broker, no registry: the cache alone.
    mosquitto.stop()
    offline = make_service(mosquitto, keys, model_dir)
    try:
        assert serving_version(offline, tm.FORECAST) == 2
        base = f"http://127.0.0.1:{offline.http_port}"
        r = requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                          json={"instances": [v1.card.test_vectors[0].input]}, timeout=5)
        assert r.ok and r.json()["version"] == 2
        assert requests.get(f"{base}/readyz", timeout=5).json()["waiting_for"] == ["broker"]
        proc = subprocess.run(
            [sys.executable, "-m", "services.inference", "rollback", tm.FORECAST,
             "--model-dir", str(model_dir)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "v2 -> v1" in proc.stdout
        assert wait_for(lambda: serving_version(offline, tm.FORECAST) == 1)
        r = requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                          json={"instances": [v1.card.test_vectors[0].input]}, timeout=5)
        assert r.json()["version"] == 1
        assert r.json()["predictions"][0] == pytest.approx(v1.card.test_vectors[0].output,
                                                           abs=1e-3)
    finally:
        offline.stop()
    # Back online: the retained v2 announcement is not taken again after the rollback.
    mosquitto.start()
    again = make_service(mosquitto, keys, model_dir)
    try:
        assert wait_for(lambda: any(o.version == 2 and o.detail == "rolled back"
                                    for o in again.updater.outcomes)), (
            again.updater.outcomes, again.client.connected, mosquitto.broker_log()[-2000:])
        assert serving_version(again, tm.FORECAST) == 1
    finally:
        again.stop()


def test_broker_restart_mid_load_loses_no_accepted_request(
    mosquitto: Mosquitto, tiny: tm.TinyModels, keys: KeyPair, tmp_path: Path,
) -> None:
    b = tm.signed_bundle(tiny, tm.FORECAST, 1, keys, tmp_path / "bundles")
    tm.write_announcement(b)
    svc = make_service(mosquitto, keys, tmp_path / "models", bundles=[b.path])
    got: dict[str, int] = {}
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        import json

        body = json.loads(msg.payload)
        with lock:
            got[body["id"]] = got.get(body["id"], 0) + 1

    # A 3.1.1 client with a persistent session, like a field device would use.
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="persistent-client",
                    clean_session=False, protocol=paho.MQTTv311)
    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe("clients/p1/reply", qos=1)
    c.reconnect_delay_set(0.2, 1)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        assert wait_for(lambda: svc.client.connected and c.is_connected())
        time.sleep(0.3)
        good = b.card.test_vectors[0].input
        import json

        accepted = []
        for i in range(300):
            if i == 150:
                mosquitto.stop()  # clean stop: the broker saves its sessions
                mosquitto.start()
                assert wait_for(lambda: c.is_connected() and svc.client.connected, 40)
            info = c.publish("edgeloop/v1/infer/tiny-forecast/request", json.dumps(
                {"inputs": good, "id": f"r{i}", "reply_to": "clients/p1/reply"}), qos=1)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError):
                continue
            if info.is_published():
                accepted.append(f"r{i}")
        assert wait_for(lambda: all(r in got for r in accepted), 40), \
            f"{len([r for r in accepted if r not in got])} accepted requests unanswered"
        assert len(accepted) >= 250
        assert svc.client.connects >= 2
    finally:
        c.disconnect()
        c.loop_stop()
        svc.stop()
