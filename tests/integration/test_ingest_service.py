"""Ingest against a real Mosquitto: bad input, gaps → RESEND, 3.1.1, clean SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttClient, MqttSettings, Protocol
from services.contract import topics
from services.contract.limits import MAX_PAYLOAD_BYTES
from services.contract.models import Command, CommandName, Reading, ReadingBatch, Sample
from services.ingest.config import IngestConfig, StorageSettings
from services.ingest.service import IngestService
from services.ingest.storage import open_storage
from tests.support.servers import Mosquitto, ServerProcess, free_port
from tests.support.tsdb import InfluxDB1

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000_000


def sample(seq: int, **values: float) -> Sample:
    return Sample(ts=T0 + seq * 1_000_000_000, seq=seq, values=values or {"temp": 20.0 + seq})


def batch(device: str, seqs: range | list[int], site: str = "lab") -> bytes:
    return ReadingBatch(device=device, site=site, samples=[sample(s) for s in seqs]).to_json()


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def wait_until(cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def publisher(mqtt_settings: MqttSettings) -> Iterator[MqttClient]:
    client = MqttClient(mqtt_settings, "test-publisher", persistent=False)
    client.start()
    assert client.wait_connected(10)
    try:
        yield client
    finally:
        client.stop()


def make_service(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry, **over: object
) -> IngestService:
    config = IngestConfig.model_validate({
        "mqtt": mqtt_settings, "client_id": "ingest-test",
        "storage": StorageSettings(url=f"sqlite:///{tmp_path}/ingest.db"),
        "metrics_port": 0, "batch_wait_s": 0.05, **over,
    })
    service = IngestService(config, registry)
    service.start()
    assert service.wait_subscribed(10)
    return service


def test_bad_inputs_are_counted_never_stored_and_ingest_keeps_running(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry,
    publisher: MqttClient,
) -> None:
    service = make_service(mqtt_settings, tmp_path, registry, devices=["dev-1", "dev-2"])
    good = topics.telemetry("lab", "dev-1")
    reading = Reading(device="dev-1", site="lab", ts=T0, seq=0, values={"temp": 1.0}).to_dict()
    bad: list[tuple[str, str, bytes]] = [
        ("not_json", good, b"{this is not json"),
        ("bad_schema", good, json.dumps({**reading, "schema": "edgeloop.bogus/1"}).encode()),
        ("bad_schema", good, json.dumps({**reading, "values": {"temp": "hot"}}).encode()),
        ("bad_schema", good, json.dumps({**reading, "values": {"seq": 1.0}}).encode()),
        ("non_finite", good, json.dumps({**reading, "values": {"temp": float("nan")}}).encode()),
        ("non_finite", good, json.dumps({**reading, "values": {"temp": float("inf")}}).encode()),
        ("future_timestamp", good,
         json.dumps({**reading, "ts": time.time_ns() + 3600 * 10**9}).encode()),
        ("too_large", good, b"{" + b" " * MAX_PAYLOAD_BYTES + b"}"),
        ("unknown_device", topics.telemetry("lab", "intruder"),
         json.dumps({**reading, "device": "intruder"}).encode()),
        ("topic_mismatch", topics.telemetry("lab", "dev-2"), json.dumps(reading).encode()),
    ]
    try:
        for _, topic, payload in bad:
            publisher.publish(topic, payload).wait_for_publish(5)
        publisher.publish(good, batch("dev-1", range(5))).wait_for_publish(5)
        expected: dict[str, int] = {}
        for reason, _, _ in bad:
            expected[reason] = expected.get(reason, 0) + 1
        wait_until(lambda: metric(registry, "edgeloop_ingest_readings_written_total") == 5
                   and sum(metric(registry, "edgeloop_ingest_rejected_total", reason=r)
                           for r in expected) == len(bad))
        for reason, n in expected.items():
            assert metric(registry, "edgeloop_ingest_rejected_total", reason=reason) == n, reason
        frame = service.storage.query()
        assert list(frame.seq) == [0, 1, 2, 3, 4]
        assert set(frame.device) == {"dev-1"}
        # Still running: a later good message is stored.
        publisher.publish(good, batch("dev-1", range(5, 8))).wait_for_publish(5)
        wait_until(lambda: service.storage.count() == 8)
    finally:
        service.stop()


def test_duplicates_are_counted_and_a_gap_is_asked_for_with_resend(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry,
    publisher: MqttClient,
) -> None:
    service = make_service(mqtt_settings, tmp_path, registry, gap_grace_s=0.3,
                           resend_interval_s=60)
    commands: queue.Queue[Command] = queue.Queue()
    publisher.subscribe(topics.cmd("lab", "dev-1"),
                        lambda m: commands.put(Command.model_validate_json(m.payload)))
    topic = topics.telemetry("lab", "dev-1")
    try:
        time.sleep(0.3)  # the publisher's own SUBSCRIBE lands
        publisher.publish(topic, batch("dev-1", range(10))).wait_for_publish(5)
        publisher.publish(topic, batch("dev-1", range(15, 20))).wait_for_publish(5)
        publisher.publish(topic, batch("dev-1", range(5, 10))).wait_for_publish(5)
        cmd = commands.get(timeout=15)
        assert cmd.command is CommandName.RESEND
        assert (cmd.device, cmd.site) == ("dev-1", "lab")
        assert cmd.args == {"from_seq": 10, "to_seq": 14}
        assert metric(registry, "edgeloop_ingest_missing_readings") == 5
        # The collector answers the resend; the gap closes.
        publisher.publish(topic, batch("dev-1", range(10, 15))).wait_for_publish(5)
        wait_until(lambda: service.storage.count() == 20)
        wait_until(lambda: metric(registry, "edgeloop_ingest_missing_readings") == 0)
        assert metric(registry, "edgeloop_ingest_duplicates_total") == 5
        assert metric(registry, "edgeloop_ingest_resend_requests_total") == 1
        assert list(service.storage.query().seq) == list(range(20))
    finally:
        service.stop()


def test_mqtt_311_uses_a_plain_subscription(
    mosquitto: Mosquitto, tmp_path: Path, registry: CollectorRegistry, publisher: MqttClient,
) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, protocol=Protocol.V311)
    service = make_service(settings, tmp_path, registry)
    try:
        assert not service.topic_filter.startswith("$share/")
        publisher.publish(topics.telemetry("lab", "d3"), batch("d3", range(50))).wait_for_publish(5)
        wait_until(lambda: service.storage.count("d3") == 50)
    finally:
        service.stop()


def test_sigterm_writes_and_acknowledges_the_open_batch(
    mosquitto: Mosquitto, tmp_path: Path, publisher: MqttClient,
) -> None:
    db = tmp_path / "ingest.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "services.ingest", "--mqtt-host", mosquitto.host,
            "--mqtt-port", str(mosquitto.port), "--client-id", "ingest-sigterm",
            "--storage", f"sqlite:///{db}", "--metrics-port", "0",
            # The batch would wait a minute to fill: only the SIGTERM flush can store it.
            "--batch-idle", "60", "--batch-wait", "60", "--batch-max", "100000"]
    log_path = tmp_path / "ingest.log"
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stderr=log_path.open("wb"))
    try:
        # Until ingest has subscribed, its messages would not be queued for it.
        wait_until(lambda: b"ingest: subscribed" in log_path.read_bytes(), 30)
        for start in range(0, 1000, 100):
            publisher.publish(topics.telemetry("lab", "dev-9"),
                              batch("dev-9", range(start, start + 100))).wait_for_publish(5)
        time.sleep(1.0)
        with open_storage(f"sqlite:///{db}") as storage:
            assert storage.count() == 0  # still in the open batch
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with open_storage(f"sqlite:///{db}") as storage:
            assert storage.count() == 1000
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Everything was acknowledged: a restarted ingest with the same session gets nothing.
    log_path.write_bytes(b"")
    proc = subprocess.Popen([*argv[:-6], "--batch-wait", "0.05"], env=env, cwd=tmp_path,
                            stderr=log_path.open("wb"))
    try:
        wait_until(lambda: b"ingest: subscribed" in log_path.read_bytes(), 30)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    with open_storage(f"sqlite:///{db}") as storage:
        assert storage.count() == 1000
    assert proc.returncode == 0, log_path.read_text()[-2000:]


def test_a_storage_outage_holds_readings_back_until_it_is_over(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry,
    publisher: MqttClient,
) -> None:
    influx = InfluxDB1(tmp_path / "influxdb1")
    influx.start()
    service = make_service(mqtt_settings, tmp_path, registry,
                           storage=StorageSettings(url=influx.storage_url(),
                                                   state_dir=tmp_path / "state"),
                           retry_max_s=0.5)
    topic = topics.telemetry("lab", "dev-1")
    try:
        publisher.publish(topic, batch("dev-1", range(100))).wait_for_publish(5)
        wait_until(lambda: metric(registry, "edgeloop_ingest_readings_written_total") == 100)
        influx.stop()
        publisher.publish(topic, batch("dev-1", range(100, 200))).wait_for_publish(5)
        wait_until(lambda: metric(registry, "edgeloop_ingest_write_errors_total",
                                  kind="unavailable") >= 2)
        assert metric(registry, "edgeloop_ingest_readings_written_total") == 100
        influx.start()
        wait_until(lambda: metric(registry, "edgeloop_ingest_readings_written_total") == 200)
        assert service.storage.count("dev-1") == 200
        assert metric(registry, "edgeloop_ingest_write_errors_total", kind="refused") == 0
    finally:
        service.stop()
        influx.stop()


def test_ingest_over_amqtt_the_embedded_311_broker(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """amqtt (the demo's no-install broker) has no shared subscriptions and no MQTT v5."""
    amqtt = Path(sys.executable).with_name("amqtt")
    if not amqtt.exists():
        pytest.skip("amqtt not installed (extra: embedded-broker)")
    port = free_port()
    conf = tmp_path / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    broker = ServerProcess("amqtt", [str(amqtt), "-c", str(conf)], tmp_path, port)
    broker.start()
    settings = MqttSettings(host="127.0.0.1", port=port, protocol=Protocol.V311)
    pub = MqttClient(settings, "amqtt-pub", persistent=False)
    service = make_service(settings, tmp_path, registry)
    pub.start()
    try:
        assert pub.wait_connected(10)
        for start in range(0, 1000, 250):
            pub.publish(topics.telemetry("lab", "d5"),
                        batch("d5", range(start, start + 250))).wait_for_publish(5)
        wait_until(lambda: service.storage.count("d5") == 1000, 30)
        assert list(service.storage.query().seq) == list(range(1000))
    finally:
        pub.stop()
        service.stop()
        broker.stop()


def test_a_pause_in_the_stream_writes_the_batch(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry,
    publisher: MqttClient,
) -> None:
    # Messages are acknowledged only after their batch is written, and a broker may send
    # only a window of unacknowledged ones (MQTT v5 Receive Maximum; max_inflight_messages
    # in Mosquitto 1.x and other brokers). So a pause means "write now": with a minute of
    # batch_wait_s the readings still land at once.
    service = make_service(mqtt_settings, tmp_path, registry, batch_wait_s=60,
                           batch_idle_s=0.05)
    topic = topics.telemetry("lab", "one")
    try:
        for seq in range(20):
            publisher.publish(topic, Reading(device="one", site="lab", ts=T0 + seq, seq=seq,
                                             values={"t": 1.0}).to_json())
        wait_until(lambda: service.storage.count("one") == 20, 20)
        publisher.publish(topic, batch("one", range(20, 40))).wait_for_publish(5)
        wait_until(lambda: service.storage.count("one") == 40, 20)
        assert metric(registry, "edgeloop_ingest_batch_readings_count") >= 2
    finally:
        service.stop()


def test_a_message_the_backend_refuses_is_dropped_and_the_rest_of_its_batch_stored(
    mqtt_settings: MqttSettings, tmp_path: Path, registry: CollectorRegistry,
    publisher: MqttClient,
) -> None:
    influx = InfluxDB1(tmp_path / "influxdb1")
    influx.start()
    service = make_service(mqtt_settings, tmp_path, registry, gap_grace_s=0.2,
                           storage=StorageSettings(url=influx.storage_url(),
                                                   state_dir=tmp_path / "state"),
                           batch_wait_s=1.0, batch_idle_s=0.5)
    try:
        # "pm25" already exists as a string field (field types are per measurement in
        # InfluxDB 1.x): x's float pm25 is refused, y's temp is fine.
        requests.post(f"{influx.base_url}/write", params={"db": "edgeloop"},
                      data=f'readings,device=z,site=lab pm25="bad" {T0 - 1}', timeout=10)
        x = ReadingBatch(device="x", site="lab", samples=[sample(s, pm25=1.0) for s in (1, 2)])
        publisher.publish(topics.telemetry("lab", "x"), batch("x", [0]))
        publisher.publish(topics.telemetry("lab", "y"), batch("y", range(10)))
        publisher.publish(topics.telemetry("lab", "x"), x.to_json())
        publisher.publish(topics.telemetry("lab", "y"), batch("y", range(10, 20)))
        publisher.publish(topics.telemetry("lab", "x"), batch("x", [3]))
        wait_until(lambda: metric(registry, "edgeloop_ingest_readings_written_total") == 22)
        assert metric(registry, "edgeloop_ingest_write_errors_total", kind="refused") >= 1
        assert service.storage.count("y") == 20
        assert list(service.storage.query(devices=["x"]).seq) == [0, 3]
        time.sleep(1.5)
        # The refused seqs 1..2 are not a gap to ask the collector about.
        assert metric(registry, "edgeloop_ingest_resend_requests_total") == 0
    finally:
        service.stop()
        influx.stop()
