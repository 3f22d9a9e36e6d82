"""The collector against a real Mosquitto: delivery, broker SIGKILL, collector kill -9,
SIGTERM flush, RESEND, commands, MQTT 3.1.1."""

from __future__ import annotations

import csv
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from prometheus_client import CollectorRegistry

from services.collector.config import CollectorConfig
from services.collector.outbox import Outbox
from services.collector.service import Collector
from services.common.mqtt import MqttClient, MqttSettings, Protocol
from services.contract import topics
from services.contract.decode import decode_as, decode_telemetry
from services.contract.models import Command, CommandName, DeviceState, DeviceStatus, Reading
from tests.support.servers import Mosquitto, ServerProcess, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WORKSHOP = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
SITE = "lab"


class Received:
    """A persistent-session QoS 1 subscriber that keeps every reading by seq."""

    def __init__(self, settings: MqttSettings, device: str) -> None:
        self.device = device
        self.readings: dict[int, Reading] = {}
        self.messages = 0
        self.duplicates = 0
        self.statuses: list[DeviceStatus] = []
        self._lock = threading.Lock()
        self.client = MqttClient(settings, f"test-sub-{device}-{uuid.uuid4().hex[:6]}")
        self.client.subscribe(topics.telemetry(SITE, device), self._on_telemetry, qos=1)
        self.client.subscribe(topics.status(SITE, device), self._on_status, qos=1)

    def _on_telemetry(self, msg: paho.MQTTMessage) -> None:
        readings = decode_telemetry(msg.topic, bytes(msg.payload), now_ns=time.time_ns())
        with self._lock:
            self.messages += 1
            for r in readings:
                if r.seq in self.readings:
                    self.duplicates += 1
                self.readings[r.seq] = r

    def _on_status(self, msg: paho.MQTTMessage) -> None:
        if msg.payload:
            with self._lock:
                self.statuses.append(decode_as(DeviceStatus, bytes(msg.payload)))

    def seqs(self) -> set[int]:
        with self._lock:
            return set(self.readings)

    def wait_for(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def missing(self, n: int) -> list[tuple[int, int]]:
        have = self.seqs()
        gaps: list[tuple[int, int]] = []
        for s in range(n):
            if s not in have:
                if gaps and gaps[-1][1] == s - 1:
                    gaps[-1] = (gaps[-1][0], s)
                else:
                    gaps.append((s, s))
        return gaps


@pytest.fixture
def received(mqtt_settings: MqttSettings) -> Iterator[Received]:
    rx = Received(mqtt_settings, "ws1")
    rx.client.start()
    assert rx.client.wait_connected(10)
    time.sleep(0.2)  # let the SUBACK land before anything is published
    try:
        yield rx
    finally:
        rx.client.stop()


def _workshop_rows(n: int) -> list[dict[str, str]]:
    with WORKSHOP.open() as f:
        return [row for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def _config(tmp_path: Path, settings: MqttSettings, **kw: object) -> CollectorConfig:
    base: dict[str, object] = {
        "source": "replay", "device": "ws1", "site": SITE, "csv": WORKSHOP, "speed": 0,
        "mqtt": settings, "outbox": tmp_path / "outbox.db", "metrics_port": 0,
        "flush_timeout_s": 5.0,
    }
    base.update(kw)
    return CollectorConfig.model_validate(base)


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _send_command(settings: MqttSettings, command: Command) -> None:
    client = MqttClient(settings, f"test-cmd-{uuid.uuid4().hex[:6]}", persistent=False)
    client.start()
    try:
        assert client.wait_connected(10)
        client.publish(topics.cmd(command.site, command.device), command.to_json(), qos=1
                       ).wait_for_publish(5)
    finally:
        client.stop()


@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
def test_replay_delivers_contiguous_seqs_with_recorded_values(
    tmp_path: Path, mosquitto: Mosquitto, registry: CollectorRegistry, protocol: Protocol
) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, protocol=protocol)
    rx = Received(settings, "ws1")
    rx.client.start()
    assert rx.client.wait_connected(10)
    time.sleep(0.2)
    n = 2000
    collector = Collector(_config(tmp_path, settings, limit=n), registry)
    collector.start()
    try:
        assert collector.wait_done(60), "replay not acknowledged"
        rx.wait_for(lambda: len(rx.seqs()) >= n, 20, f"{n} readings")
    finally:
        collector.stop()
        rx.client.stop()
    assert rx.seqs() == set(range(n))
    rows = _workshop_rows(n)
    for seq in (0, 1, n // 2, n - 1):
        r = rx.readings[seq]
        assert r.ts == int(rows[seq]["time"]) * 10**9
        assert r.values == {k: float(rows[seq][k]) for k in ("temp", "humidity", "pressure")}
    published = _metric(registry, "edgeloop_collector_readings_published_total")
    batches = _metric(registry, "edgeloop_collector_messages_published_total", kind="batch")
    assert published == n
    assert batches >= 1 and rx.messages < n  # full speed: readings went out in batches
    assert _metric(registry, "edgeloop_collector_buffered_readings") == 0
    print(f"\n[{protocol.value}] {n} readings in {rx.messages} messages, "
          f"duplicates {rx.duplicates}")


def test_low_rate_publishes_single_readings_and_status(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received, registry: CollectorRegistry
) -> None:
    # The metrics port is taken: the collector says so and collects anyway.
    busy = socket.create_server(("127.0.0.1", 0))
    cfg = _config(tmp_path, mqtt_settings, source="simulate", interval=0.1, limit=20,
                  metrics_port=busy.getsockname()[1])
    collector = Collector(cfg, registry)
    collector.start()
    busy.close()
    assert collector.metrics_port is None
    try:
        assert collector.wait_done(30)
        received.wait_for(lambda: len(received.seqs()) >= 20, 10, "20 readings")
        received.wait_for(
            lambda: any(s.state is DeviceState.ONLINE for s in received.statuses), 10, "online"
        )
    finally:
        collector.stop()
    assert received.seqs() == set(range(20))
    assert _metric(registry, "edgeloop_collector_messages_published_total", kind="single") >= 10
    received.wait_for(lambda: received.statuses[-1].state is DeviceState.OFFLINE, 10, "offline")


def test_broker_sigkill_mid_stream_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_settings: MqttSettings, received: Received,
    registry: CollectorRegistry,
) -> None:
    n = 3000
    # Workshop rows are ~3 s apart: at 1500x the replay takes about 6 s.
    cfg = _config(tmp_path, mqtt_settings, limit=n, speed=1500)
    collector = Collector(cfg, registry)
    collector.start()
    try:
        received.wait_for(lambda: len(received.seqs()) >= 500, 30, "the first 500")
        mosquitto.kill()
        time.sleep(2.0)
        buffered_while_down = _metric(registry, "edgeloop_collector_buffered_readings")
        mosquitto.start()
        assert collector.wait_done(60), "outbox not drained after the broker came back"
        received.wait_for(lambda: received.client.connected, 30, "subscriber reconnect")
        time.sleep(1.0)
        gaps = received.missing(n)
        lost_by_broker = sum(b - a + 1 for a, b in gaps)
        # The broker acknowledged these, then died before saving them: ask again (RESEND).
        for i, (a, b) in enumerate(gaps):
            _send_command(mqtt_settings, Command(
                id=f"resend-{i}", device="ws1", site=SITE, command=CommandName.RESEND,
                args={"from_seq": a, "to_seq": b},
            ))
        received.wait_for(lambda: len(received.seqs()) >= n, 30, "every seq after RESEND")
    finally:
        collector.stop()
    assert received.seqs() == set(range(n))
    reconnects = _metric(registry, "edgeloop_collector_mqtt_reconnects_total")
    assert reconnects >= 1
    assert buffered_while_down > 0
    assert _metric(registry, "edgeloop_collector_resent_readings_total") == lost_by_broker
    print(
        f"\nbroker SIGKILL: {n} readings, {len(received.seqs())} distinct received, "
        f"{received.duplicates} duplicates, buffered while down {buffered_while_down:.0f}, "
        f"reconnects {reconnects:.0f}, lost by the broker and resent {lost_by_broker}"
    )


def test_replay_retimed_to_now(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received, registry: CollectorRegistry
) -> None:
    # 40 rows ~3 s apart at 100x: about 1.2 s, stamped with the time they are replayed.
    cfg = _config(tmp_path, mqtt_settings, limit=40, speed=100, timestamps="now")
    before = time.time_ns()
    collector = Collector(cfg, registry)
    collector.start()
    try:
        assert collector.wait_done(30)
        received.wait_for(lambda: len(received.seqs()) >= 40, 10, "40 readings")
    finally:
        collector.stop()
    after = time.time_ns()
    ts = [received.readings[s].ts for s in range(40)]
    assert all(before <= t <= after for t in ts)
    assert all(b > a for a, b in itertools.pairwise(ts))
    # The recorded pacing, sped up 100x, survives: first to last spans ~1.2 s, not 0.
    rows = _workshop_rows(40)
    recorded_s = (int(rows[-1]["time"]) - int(rows[0]["time"])) / 100
    assert (ts[-1] - ts[0]) / 1e9 >= recorded_s * 0.8


def test_resend_republishes_a_held_range_and_counts_the_rest(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received, registry: CollectorRegistry
) -> None:
    cfg = _config(tmp_path, mqtt_settings, limit=3000, resend_retention=200)
    collector = Collector(cfg, registry)
    collector.start()
    try:
        assert collector.wait_done(60)
        received.wait_for(lambda: len(received.seqs()) >= 3000, 20, "3000 readings")
        before = received.duplicates
        _send_command(mqtt_settings, Command(
            id="r1", device="ws1", site=SITE, command=CommandName.RESEND,
            args={"from_seq": 2990, "to_seq": 2999},
        ))
        received.wait_for(lambda: received.duplicates >= before + 10, 10, "10 resent")
        # Seqs 0..9 were acknowledged long ago and pruned (retention 200): counted missing.
        _send_command(mqtt_settings, Command(
            id="r2", device="ws1", site=SITE, command=CommandName.RESEND,
            args={"from_seq": "0", "to_seq": 9.0},  # loose JSON types are accepted
        ))
        received.wait_for(
            lambda: _metric(registry, "edgeloop_collector_resend_missing_readings_total") >= 10,
            10, "missing counted",
        )
    finally:
        collector.stop()
    assert _metric(registry, "edgeloop_collector_resend_requests_total") == 2
    assert _metric(registry, "edgeloop_collector_resent_readings_total") == 10


def test_commands_reach_the_source_and_replies_land_in_status(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received, registry: CollectorRegistry
) -> None:
    cfg = _config(tmp_path, mqtt_settings, source="simulate", interval=0.5)
    collector = Collector(cfg, registry)
    collector.start()
    try:
        assert collector.wait_done(0) is False
        received.wait_for(lambda: bool(received.statuses), 10, "a status")
        _send_command(mqtt_settings, Command(
            id="p1", device="ws1", site=SITE, command=CommandName.PING,
        ))
        received.wait_for(
            lambda: any(s.info.get("command_id") == "p1" for s in received.statuses), 10, "PONG"
        )
        _send_command(mqtt_settings, Command(
            id="u1", device="ws1", site=SITE, command=CommandName.UPDATE_MODEL,
        ))
        received.wait_for(
            lambda: any(s.info.get("command_id") == "u1" for s in received.statuses), 10, "ERR"
        )
    finally:
        collector.stop()
    pong = next(s for s in received.statuses if s.info.get("command_id") == "p1")
    err = next(s for s in received.statuses if s.info.get("command_id") == "u1")
    assert pong.info["reply"] == "PONG" and err.info["reply"] == "ERR"
    assert _metric(registry, "edgeloop_collector_commands_total", result="rejected") == 1


def _collector_cmd(tmp_path: Path, settings: MqttSettings, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "services.collector", "--device", "ws1", "--site", SITE,
        "--mqtt-host", settings.host, "--mqtt-port", str(settings.port),
        "--outbox", str(tmp_path / "outbox.db"), "--metrics-port", "0", *extra,
    ]


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_collector_kill_9_and_restart_continues_seqs_and_loses_nothing(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received
) -> None:
    n = 3000
    argv = _collector_cmd(
        tmp_path, mqtt_settings, "--source", "replay", "--csv", str(WORKSHOP),
        "--speed", "1500", "--limit", str(n), "--exit-when-done",
    )
    log = tmp_path / "collector.log"
    first = _spawn(argv, log)
    try:
        received.wait_for(lambda: len(received.seqs()) >= 800, 40, "800 readings")
    finally:
        first.kill()  # SIGKILL: no flush, no goodbye
        first.wait(10)
    at_kill = len(received.seqs())
    second = _spawn(argv, log)
    try:
        assert second.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    received.wait_for(lambda: len(received.seqs()) >= n, 20, f"{n} readings")
    # Exactly the recording, numbered 0..n-1: the replay resumed at the last committed
    # row, and every reading the killed process had accepted was sent after the restart.
    assert received.seqs() == set(range(n))
    rows = _workshop_rows(n)
    for seq in range(0, n, 97):
        assert received.readings[seq].ts == int(rows[seq]["time"]) * 10**9
    ob = Outbox(tmp_path / "outbox.db", device="ws1", site=SITE)
    assert (ob.next_seq, ob.pending_count) == (n, 0)
    ob.close()
    print(f"\ncollector kill -9 after {at_kill} received; after restart {len(received.seqs())} "
          f"distinct, {received.duplicates} duplicates")


def test_sigterm_flushes_everything_accepted(
    tmp_path: Path, mqtt_settings: MqttSettings, received: Received
) -> None:
    port = free_port()
    argv = _collector_cmd(
        tmp_path, mqtt_settings, "--source", "simulate", "--profile", "accel", "--seed", "4",
    )
    argv[argv.index("--metrics-port") + 1] = str(port)
    proc = _spawn(argv, tmp_path / "collector.log")
    try:
        received.wait_for(lambda: len(received.seqs()) >= 100, 30, "100 readings")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "edgeloop_collector_readings_published_total" in text
        assert 'edgeloop_collector_lines_total{kind="reading"}' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    ob = Outbox(tmp_path / "outbox.db", device="ws1", site=SITE)
    accepted, pending = ob.next_seq, ob.pending_count
    ob.close()
    received.wait_for(lambda: len(received.seqs()) >= accepted, 10, "every accepted reading")
    assert pending == 0
    assert received.seqs() == set(range(accepted))
    received.wait_for(lambda: received.statuses[-1].state is DeviceState.OFFLINE, 10, "offline")
    assert received.statuses[-1].detail == "stopped"


def test_amqtt_broker_mqtt_311(tmp_path: Path, registry: CollectorRegistry) -> None:
    """The embedded broker the demo can use (amqtt) speaks only MQTT 3.1.1."""
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
    rx = Received(settings, "ws1")
    rx.client.start()
    try:
        assert rx.client.wait_connected(10)
        time.sleep(0.3)
        collector = Collector(_config(tmp_path, settings, limit=1000), registry)
        collector.start()
        try:
            assert collector.wait_done(60)
            rx.wait_for(lambda: len(rx.seqs()) >= 1000, 30, "1000 readings via amqtt")
        finally:
            collector.stop()
    finally:
        rx.client.stop()
        broker.stop()
    assert rx.seqs() == set(range(1000))
