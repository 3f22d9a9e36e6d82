"""edgeloop serve against a real Mosquitto: mosquitto_rr (v5), paho 3.1.1, the Aalto
tutorial's format, HTTP == MQTT, errors and overload."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttSettings
from services.contract.topics import infer_request
from services.inference.config import AaltoSettings, InferenceConfig
from services.inference.service import InferenceService
from tests.support import tiny_models as tm
from tests.support.servers import Mosquitto, which_or_skip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


@pytest.fixture
def bundles(tiny: tm.TinyModels, tmp_path: Path) -> dict[str, tm.SignedBundle]:
    keys = tm.keypair(tmp_path / "keys")
    out = {}
    for name in (tm.FORECAST, tm.CLASSIFY):
        b = tm.signed_bundle(tiny, name, 1, keys, tmp_path / "bundles")
        tm.write_announcement(b)
        out[name] = b
    out["_key"] = keys.public_path  # type: ignore[assignment]
    return out


def start_service(mosquitto: Mosquitto, tmp_path: Path, bundles: dict[str, tm.SignedBundle],
                  **extra: object) -> InferenceService:
    config = InferenceConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        client_id=f"serve-{uuid.uuid4().hex[:6]}", http_port=0,
        public_key=bundles["_key"],  # type: ignore[arg-type]
        model_dir=tmp_path / "models",
        bundles=[b.path for k, b in bundles.items() if k != "_key"],
        **extra,  # type: ignore[arg-type]
    )
    service = InferenceService(config, CollectorRegistry())
    service.start()
    deadline = time.monotonic() + 15
    while service.not_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not service.not_ready(), service.not_ready()
    return service


@pytest.fixture
def service(mosquitto: Mosquitto, tmp_path: Path,
            bundles: dict[str, tm.SignedBundle]) -> Iterator[InferenceService]:
    svc = start_service(mosquitto, tmp_path, bundles,
                        aalto=AaltoSettings(enabled=True, model=tm.FORECAST))
    try:
        yield svc
    finally:
        svc.stop()


class V5Client:
    """A plain paho v5 request/response client with Correlation Data."""

    def __init__(self, mosquitto: Mosquitto, protocol: MQTTProtocolVersion =
                 MQTTProtocolVersion.MQTTv5) -> None:
        self.protocol = protocol
        self.reply_topic = f"test/reply/{uuid.uuid4().hex[:8]}"
        self.replies: queue.Queue[tuple[bytes | None, dict[str, object]]] = queue.Queue()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                             protocol=protocol)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(mosquitto.host, mosquitto.port)
        self.c.loop_start()
        self.c.subscribe(self.reply_topic, qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        self.replies.put((corr, json.loads(msg.payload)))

    def request(self, model: str, body: dict[str, object], corr: bytes | None = None,
                raw: bytes | None = None) -> None:
        props = None
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.reply_topic
            if corr is not None:
                props.CorrelationData = corr
        else:
            body = {**body, "reply_to": self.reply_topic}
        payload = raw if raw is not None else json.dumps(body).encode()
        self.c.publish(infer_request(model), payload, qos=1, properties=props)

    def get(self, timeout: float = 10) -> tuple[bytes | None, dict[str, object]]:
        return self.replies.get(timeout=timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_mosquitto_rr_v5_gets_the_test_vector_prediction(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    rr = which_or_skip("mosquitto_rr")
    card = bundles[tm.FORECAST].card
    tv = card.test_vectors[1]
    proc = subprocess.run(
        [rr, "-V", "5", "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1",
         "-t", infer_request(tm.FORECAST), "-e", "rr/reply/1", "-D", "PUBLISH",
         "correlation-data", "abc123", "-m", json.dumps({"inputs": tv.input}), "-W", "10"],
        capture_output=True, text=True, timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["schema"] == "edgeloop.infer-response/1"
    assert reply["model"] == tm.FORECAST and reply["version"] == 1
    assert reply["runtime"] == "litert"
    assert reply["outputs"] == pytest.approx(tv.output, abs=card.test_vector_tolerance)
    assert isinstance(reply["latency_s"], float)  # present; its size is bench/'s business


def test_correlation_data_echoed_and_batches(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    card = bundles[tm.FORECAST].card
    client = V5Client(mosquitto)
    try:
        inputs = [tv.input for tv in card.test_vectors]
        client.request(tm.FORECAST, {"inputs": inputs, "batch": True, "id": "b1"}, corr=b"\x00k")
        corr, reply = client.get()
        assert corr == b"\x00k" and reply["id"] == "b1"
        outs = reply["outputs"]
        assert isinstance(outs, list) and len(outs) == len(inputs)
        for got, tv in zip(outs, card.test_vectors, strict=True):
            assert got == pytest.approx(tv.output, abs=card.test_vector_tolerance)
        # A classifier's reply carries its labels.
        ccard = bundles[tm.CLASSIFY].card
        client.request(tm.CLASSIFY, {"inputs": ccard.test_vectors[1].input}, corr=b"c")
        _, reply = client.get()
        assert reply["labels"] == ["idle", "freefall", "shake"]
        probs = reply["outputs"]
        assert isinstance(probs, list)
        assert int(np.argmax(probs)) == 1  # the second vector is a freefall window
    finally:
        client.close()


def test_errors_get_coded_replies_and_service_keeps_serving(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    client = V5Client(mosquitto)
    v311 = V5Client(mosquitto, MQTTProtocolVersion.MQTTv311)
    try:
        good = bundles[tm.FORECAST].card.test_vectors[0].input
        cases = [
            (tm.FORECAST, None, b"{not json", "bad_json"),
            (tm.FORECAST, {"inputs": [1.0, 2.0]}, None, "bad_shape"),
            (tm.FORECAST, {"inputs": ["a"] * 8}, None, "bad_shape"),
            (tm.FORECAST, {"inputs": good, "extra": 1}, None, "bad_schema"),
            ("no-such-model", {"inputs": good}, None, "unknown_model"),
            (tm.FORECAST, {"inputs": [good] * 10}, b"x" * (300 * 1024), "too_large"),
            (tm.FORECAST, {"device": "nobody"}, None, "no_window"),
        ]
        for i, (model, body, raw, code) in enumerate(cases):
            client.request(model, body or {}, corr=str(i).encode(), raw=raw)
            corr, reply = client.get()
            assert corr == str(i).encode()
            assert reply["schema"] == "edgeloop.infer-error/1", reply
            assert reply["code"] == code, reply
        # 3.1.1: reply_to and id in the payload, errors included.
        v311.request(tm.FORECAST, {"inputs": [1.0], "id": "e1"})
        _, reply = v311.get()
        assert reply["code"] == "bad_shape" and reply["id"] == "e1"
        v311.request(tm.FORECAST, {"inputs": good, "id": "ok1"})
        _, reply = v311.get()
        assert reply["id"] == "ok1" and reply["schema"] == "edgeloop.infer-response/1"
        client.request(tm.FORECAST, {"inputs": good}, corr=b"after")
        corr, reply = client.get()
        assert corr == b"after" and reply["schema"] == "edgeloop.infer-response/1"
        assert requests.get(f"http://127.0.0.1:{service.http_port}/healthz", timeout=5).ok
    finally:
        client.close()
        v311.close()


def test_http_predict_equals_mqtt_predict(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    base = f"http://127.0.0.1:{service.http_port}"
    rng = np.random.default_rng(3)
    inputs = (22 + 2 * rng.standard_normal((5, 8))).tolist()
    r = requests.post(f"{base}/v1/models/{tm.FORECAST}:predict", json={"instances": inputs},
                      timeout=10)
    assert r.status_code == 200, r.text
    http = r.json()
    client = V5Client(mosquitto)
    try:
        client.request(tm.FORECAST, {"inputs": inputs, "batch": True})
        _, mqtt = client.get()
    finally:
        client.close()
    assert http["predictions"] == mqtt["outputs"]
    assert (http["model"], http["version"], http["runtime"]) == (
        mqtt["model"], mqtt["version"], mqtt["runtime"])
    listing = requests.get(f"{base}/v1/models", timeout=5).json()
    assert {m["name"] for m in listing["models"]} == {tm.FORECAST, tm.CLASSIFY}
    one = requests.get(f"{base}/v1/models/{tm.CLASSIFY}", timeout=5).json()
    assert one["labels"] == ["idle", "freefall", "shake"] and one["version"] == 1
    assert requests.get(f"{base}/v1/models/nope", timeout=5).status_code == 404
    bad = requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                        json={"instances": [[1.0]]}, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == "bad_shape"
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert 'edgeloop_inference_requests_total{model="tiny-forecast",outcome="ok",' \
           'transport="http"} 1.0' in metrics
    assert 'edgeloop_model_info{name="tiny-forecast",runtime="litert",version="1"} 1.0' \
        in metrics


def test_aalto_tutorial_client_over_mqtt_311_gets_predictions(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    """The tutorial's send_request.py, in its own format: paho 3.1.1, clean_session=False,
    ``index,value,threshold`` on request/<station>/<dp>/<alarm>, text back on predict/..."""
    got: queue.Queue[str] = queue.Queue()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="user_152169", clean_session=False,
                    protocol=MQTTProtocolVersion.MQTTv311)
    c.on_message = lambda _c, _u, m: got.put(m.payload.decode())
    c.connect(mosquitto.host, mosquitto.port, keepalive=60)
    c.loop_start()
    c.subscribe("predict/1160629000/121/308")
    time.sleep(0.3)
    values = bundles[tm.FORECAST].card.test_vectors[2].input
    try:
        texts = []
        for i, v in enumerate(values):
            c.publish("request/1160629000/121/308", f"{float(i)},{v},230")
            texts.append(got.get(timeout=10))
    finally:
        c.disconnect()
        c.loop_stop()
    assert "warming up (1/8" in texts[0]
    last = texts[-1]
    assert last.startswith(f"{tm.FORECAST} v1: "), last
    want = bundles[tm.FORECAST].card.test_vectors[2].output[0]
    assert float(last.split(": ")[1]) == pytest.approx(want, abs=1e-3)


def test_flood_gets_overload_errors_and_every_request_an_answer(
    mosquitto: Mosquitto, tmp_path: Path, bundles: dict[str, tm.SignedBundle]
) -> None:
    svc = start_service(mosquitto, tmp_path, bundles, queue_max=4, max_batch=1)
    client = V5Client(mosquitto)
    try:
        good = bundles[tm.FORECAST].card.test_vectors[0].input
        n = 400
        big = [good] * 256
        for i in range(n):
            client.request(tm.FORECAST, {"inputs": big, "batch": True}, corr=str(i).encode())
        codes: dict[str, int] = {}
        seen = set()
        for _ in range(n):
            corr, reply = client.get(timeout=30)
            seen.add(corr)
            key = str(reply.get("code", "ok"))
            codes[key] = codes.get(key, 0) + 1
        assert len(seen) == n
        assert codes.get("overloaded", 0) > 0 and codes.get("ok", 0) > 0, codes
        assert requests.get(f"http://127.0.0.1:{svc.http_port}/healthz", timeout=5).ok
    finally:
        client.close()
        svc.stop()


def test_client_gone_before_its_reply_does_not_disturb_the_service(
    service: InferenceService, mosquitto: Mosquitto, bundles: dict[str, tm.SignedBundle]
) -> None:
    good = bundles[tm.FORECAST].card.test_vectors[0].input
    batch = [good] * 1024  # big enough that the client is gone before the reply
    for i in range(5):
        gone = V5Client(mosquitto)
        gone.request(tm.FORECAST, {"inputs": batch, "batch": True}, corr=str(i).encode())
        gone.c.publish("x", b"", qos=1).wait_for_publish(5)
        gone.close()
    client = V5Client(mosquitto)
    try:
        client.request(tm.FORECAST, {"inputs": good}, corr=b"alive")
        corr, reply = client.get()
        assert corr == b"alive" and reply["schema"] == "edgeloop.infer-response/1"
    finally:
        client.close()
    assert requests.get(f"http://127.0.0.1:{service.http_port}/healthz", timeout=5).ok
    def ok() -> float | None:
        return service.registry.get_sample_value(
            "edgeloop_inference_requests_total",
            {"model": tm.FORECAST, "transport": "mqtt", "outcome": "ok"})

    deadline = time.monotonic() + 10
    while ok() != 6.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok() == 6.0  # the abandoned ones were answered too, into the void


def test_replicas_split_requests_with_a_shared_subscription(
    mosquitto: Mosquitto, tmp_path: Path, bundles: dict[str, tm.SignedBundle]
) -> None:
    shared = "$share/edge/edgeloop/v1/infer/+/request"
    a = start_service(mosquitto, tmp_path / "a", bundles, request_filter=shared)
    b = start_service(mosquitto, tmp_path / "b", bundles, request_filter=shared)
    client = V5Client(mosquitto)
    try:
        good = bundles[tm.FORECAST].card.test_vectors[0].input
        n = 200
        for i in range(n):
            client.request(tm.FORECAST, {"inputs": good}, corr=str(i).encode())
        corrs = [client.get()[0] for _ in range(n)]
        assert sorted(corrs) == sorted(str(i).encode() for i in range(n))  # each once
        with pytest.raises(queue.Empty):
            client.get(timeout=0.5)
        counts = [
            s.registry.get_sample_value("edgeloop_inference_requests_total", {
                "model": tm.FORECAST, "transport": "mqtt", "outcome": "ok"}) or 0
            for s in (a, b)]
        assert sum(counts) == n and min(counts) > 0, counts
    finally:
        client.close()
        a.stop()
        b.stop()
