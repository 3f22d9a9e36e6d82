"""The demo's story, stage by stage: collect, train, publish, hot-load, detect, answer.

Every stage says what it is doing in one line, shows a live status while it waits, and
fails with a message that names the stage. The summary and the report are written even
when a stage fails, so a person can see how far the loop got.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import requests

from services.collector.replay import Recording, load_csv, load_edge_impulse
from services.common.mqtt import MqttClient, Protocol
from services.contract import (
    Alert,
    AlertState,
    Command,
    CommandName,
    Event,
    InferenceRequest,
    decode_as,
    topics,
)
from services.contract.models import AlertKind
from services.demo.console import Console, StageFailed
from services.demo.report import SeriesPlot, plot_accel, plot_latency, plot_series, write_html
from services.demo.sources import RecordedDevice
from services.demo.stack import SITE, Stack, start_stack
from services.demo.summary import AlertSeen, DemoSummary, DeviceCount, EventSeen, ModelResult
from services.ingest.storage import Storage, open_storage

REPO = Path(__file__).resolve().parents[2]
WORKSHOP_CSV = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
FREE_FALL = REPO / "data" / "free-fall"
#: The workshop recording's longest stretch without a gap (rows 4683..16588, ~10 h).
WORKSHOP_ROWS = (4683, 16588)
WORKSHOP_PERIOD_S = 3.0
FORECAST_MODEL = "temp-forecast"
CLASSIFIER_MODEL = "motion-classifier"
#: Recordings kept out of the classifier's training so the demo replays unseen motion.
HELD_OUT_PREFIXES = ("idle", "unknown")
HELD_OUT_PER_LABEL = 2
FIRMWARE_DEVICE = "mcu-1"


@dataclass
class DemoOptions:
    duration_s: float
    speed: float
    keep_running: bool
    firmware: bool
    out_dir: Path
    workdir: Path
    embedded_broker: bool
    train_rows: int
    fire_c_per_row: float
    alert_relative: float
    requests: int
    live_speed: float = 20.0


class Watcher:
    """Subscribes like any client would: alerts, events and announcements."""

    def __init__(self, stack: Stack) -> None:
        self.alerts: list[tuple[float, Alert]] = []
        self.events: list[tuple[float, Event]] = []
        self._lock = threading.Lock()
        self.client = MqttClient(stack.mqtt, f"demo-watcher-{uuid.uuid4().hex[:6]}",
                                 persistent=False)
        self.client.subscribe(topics.subscription(topics.DeviceTopic.ALERT, site=SITE),
                              self._on_alert)
        self.client.subscribe(topics.subscription(topics.DeviceTopic.EVENT, site=SITE),
                              self._on_event)
        self.client.start()
        if not self.client.wait_connected(15):
            raise StageFailed("the demo's own MQTT client could not connect to the broker")

    def _on_alert(self, msg: Any) -> None:
        alert = decode_as(Alert, bytes(msg.payload))
        with self._lock:
            self.alerts.append((time.monotonic(), alert))

    def _on_event(self, msg: Any) -> None:
        event = decode_as(Event, bytes(msg.payload))
        with self._lock:
            self.events.append((time.monotonic(), event))

    def raised(self, device: str, kind: AlertKind) -> list[Alert]:
        with self._lock:
            return [a for _, a in self.alerts
                    if a.device == device and a.kind is kind and a.state is AlertState.RAISED]

    def events_of(self, device: str, label: str) -> list[Event]:
        with self._lock:
            return [e for _, e in self.events if e.device == device and e.label == label]

    def stop(self) -> None:
        self.client.stop()


class Requester:
    """Prediction requests over MQTT (v5 Response Topic, or 3.1.1 reply_to) and HTTP."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client_id = f"demo-client-{uuid.uuid4().hex[:6]}"
        self.reply_topic = topics.infer_reply(FORECAST_MODEL, self.client_id)
        self.replies: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self.client = MqttClient(stack.mqtt, self.client_id, persistent=False)
        self.client.subscribe(self.reply_topic,
                              lambda m: self.replies.put((time.perf_counter(), bytes(m.payload))))
        self.client.start()
        if not self.client.wait_connected(15):
            raise StageFailed("the demo's request client could not connect")

    def mqtt(self, request: InferenceRequest) -> tuple[float, dict[str, Any]]:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if self.stack.mqtt.protocol is Protocol.V5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = self.reply_topic
            props.CorrelationData = (request.id or "").encode()
        else:
            request = request.model_copy(update={"reply_to": self.reply_topic})
        started = time.perf_counter()
        self.client.publish(topics.infer_request(FORECAST_MODEL), request.to_json(), qos=1,
                            properties=props)
        while True:
            at, payload = self.replies.get(timeout=10)
            doc = json.loads(payload)
            if doc.get("id") in (request.id, None):
                return at - started, doc

    def http(self, model: str, instances: list[Any]) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        resp = requests.post(f"{self.stack.http_url}/v1/models/{model}:predict",
                             json={"instances": instances}, timeout=10)
        took = time.perf_counter() - started
        resp.raise_for_status()
        return took, resp.json()

    def stop(self) -> None:
        self.client.stop()


def _held_out_training_dir(workdir: Path) -> tuple[Path, list[Path]]:
    """A training folder without a few idle/unknown recordings, which the device replays."""
    train_dir = workdir / "free-fall-train"
    shutil.rmtree(train_dir, ignore_errors=True)
    train_dir.mkdir(parents=True)
    files = sorted((FREE_FALL / "training").glob("*.json"))
    held: list[Path] = []
    for prefix in HELD_OUT_PREFIXES:
        held += [f for f in files if f.name.startswith(prefix + ".")][:HELD_OUT_PER_LABEL]
    for f in files:
        if f not in held:
            (train_dir / f.name).symlink_to(f)
    return train_dir, held


def _accel_playlist(held: list[Path]) -> tuple[Recording, list[tuple[int, int, str]]]:
    """Unseen recordings in turn: idle, free fall, unknown, free fall, ... (row spans)."""
    falls = sorted((FREE_FALL / "additionnal").glob("*.json"))
    order: list[Path] = []
    quiet = list(held)
    while quiet or falls:
        if quiet:
            order.append(quiet.pop(0))
        if falls:
            order.append(falls.pop(0))
    rows: list[tuple[dict[str, float], tuple[str, ...]]] = []
    spans: list[tuple[int, int, str]] = []
    for path in order:
        rec = load_edge_impulse(path)
        spans.append((len(rows), len(rows) + len(rec.rows), path.name.split(".")[0]))
        rows += rec.rows
    return Recording(None, rows, {}, "demo-accel"), spans


def _native_noise(line: str) -> bool:
    """TensorFlow's C++ start-up chatter: in the log file, not on the terminal."""
    if "absl::InitializeLog" in line or line.startswith(("INFO: Created TensorFlow",
                                                          "WARNING: All log messages")):
        return True
    # absl's own format: I0000 00:00:1795315859.033558   11136 port.cc:153] ...
    return len(line) > 6 and line[0] in "IWE" and line[1:5].isdigit() and line[5] == " "


def _num(doc: object, *path: str) -> float | None:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return float(doc) if isinstance(doc, int | float) else None


def _headline_metrics(metrics: dict[str, Any], baselines: dict[str, Any]) -> dict[str, float]:
    """The few numbers a person compares: the model against its baselines."""
    picks = {
        "test RMSE (int8, published)": _num(metrics, "test", "rmse"),
        "persistence RMSE": _num(baselines, "persistence", "rmse"),
        "workshop MLP RMSE": _num(baselines, "workshop_mlp", "rmse"),
        "AR(10) RMSE": _num(baselines, "ar10", "rmse"),
        "test accuracy (int8)": _num(metrics, "test", "accuracy"),
        "grouped CV accuracy": _num(metrics, "cv", "accuracy_mean"),
        "majority-class accuracy": _num(baselines, "majority_class", "accuracy"),
        "Edge Impulse lab accuracy": _num(baselines, "edge_impulse_lab", "accuracy"),
        "train + convert s": _num(metrics, "train_convert_seconds"),
    }
    return {k: v for k, v in picks.items() if v is not None}


def _model_detail(metrics: dict[str, Any], description: str) -> str:
    model, requested = metrics.get("model"), metrics.get("requested")
    if isinstance(model, str) and isinstance(requested, str) and model != requested:
        return (f"published {model}: the requested {requested} lost to persistence beyond the "
                "gate's tolerance on held-out data")
    return (f"model: {model}" if isinstance(model, str) else description)[:200]


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.o = options
        self.c = console
        self.summary = DemoSummary()
        self._stack: Stack | None = None
        self.watcher: Watcher | None = None
        self.requester: Requester | None = None
        self.temp_devices: dict[str, RecordedDevice] = {}
        self.accel: RecordedDevice | None = None
        self.accel_spans: list[tuple[int, int, str]] = []
        self.fire_device = "temp-2"
        self.fire_injected_at: float | None = None
        self.qemu: Any = None
        self.trained: dict[str, Path] = {}
        self._published_at: dict[tuple[str, int], float] = {}
        self._first_served: dict[tuple[str, int], float] = {}
        self._storage: Storage | None = None
        self._polling = threading.Event()
        self.started = time.monotonic()

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            raise StageFailed("the stack is not running")
        return self._stack

    def _poll_edge(self) -> None:
        """Note when each model version first serves at the edge (announce → serving)."""
        while not self._polling.wait(0.2):
            for name, version in self._edge_models().items():
                self._first_served.setdefault((name, version), time.time())

    # ------------------------------------------------------------------ stages
    def run(self) -> int:
        try:
            with self.c.stage("start the stack: broker, registry, ingest, edge inference"):
                self._start()
            with self.c.stage("devices: 2 x workshop board (replayed), 1 x accelerometer"):
                self._devices()
            with self.c.stage(f"collect {self.o.train_rows:,} readings per board into storage"):
                self._collect()
            with self.c.stage("train the temperature forecaster from storage"):
                self._train_forecaster()
            with self.c.stage("train the free-fall classifier"):
                self._train_classifier()
            with self.c.stage("edge hot-loads the signed models from their announcements"):
                self._wait_loaded()
            with self.c.stage(f"fire on {self.fire_device}: FAULT fire sent over MQTT"):
                self._fire()
            with self.c.stage("free fall: accelerometer replays unseen recordings"):
                self._free_fall()
            with self.c.stage(f"ask for {self.o.requests} predictions over MQTT and HTTP"):
                self._requests()
            with self.c.stage("watch the live stream"):
                self._watch()
            with self.c.stage("drain: every reading stored?"):
                self._drain()
            ok = True
        except StageFailed as exc:
            self.c.line(f"demo failed at stage: {exc}")
            ok = False
        except KeyboardInterrupt:
            self.c.line("interrupted: shutting down cleanly")
            ok = False
        finally:
            try:
                self._report()
                ok = ok and all(self.summary.checks().values())
            except Exception as exc:  # the report must not hide the demo's own outcome
                self.c.line(f"could not write the report: {exc!r}")
                ok = False
            if self.o.keep_running and self._stack is not None and ok:
                self._keep_running()
            self._stop()
        return 0 if ok else 1

    def _start(self) -> None:
        stack = start_stack(self.o.workdir, embedded_broker=self.o.embedded_broker,
                            alert_relative=self.o.alert_relative)
        self._stack = stack
        self.summary.broker = (
            f"Mosquitto (MQTT v5) on 127.0.0.1:{stack.broker.port}"
            if stack.broker.kind == "mosquitto"
            else f"amqtt in-process (MQTT 3.1.1; "
                 f"{'--embedded-broker' if self.o.embedded_broker else 'Mosquitto not installed'}"
                 f") on 127.0.0.1:{stack.broker.port}"
        )
        self.summary.storage = stack.storage_url
        self.summary.registry_url = stack.registry_url
        self.summary.http_url = stack.http_url
        self.c.line(f"  broker   {self.summary.broker}")
        self.c.line(f"  storage  {stack.storage_url}")
        self.c.line(f"  registry {stack.registry_url}  ·  edge HTTP {stack.http_url}")
        self.watcher = Watcher(stack)
        threading.Thread(target=self._poll_edge, name="demo-poll", daemon=True).start()

    def _devices(self) -> None:
        workshop = load_csv(WORKSHOP_CSV)
        start, end = WORKSHOP_ROWS
        for name, fire in (("temp-1", False), ("temp-2", True)):
            src = RecordedDevice(workshop, start=start, end=end, period_s=WORKSHOP_PERIOD_S,
                                 speed=self.o.speed, fire_field="temp" if fire else None,
                                 fire_c_per_row=self.o.fire_c_per_row)
            self.temp_devices[name] = src
            self.stack.add_device(name, "workshop board (replay)", src)
        self.train_dir, held = _held_out_training_dir(self.o.workdir)
        rec, self.accel_spans = _accel_playlist(held)
        self.accel = RecordedDevice(rec, start=0, end=len(rec.rows), period_s=0.016, speed=1.0,
                                    loop=True)
        self.stack.add_device("accel-1", "accelerometer (replay)", self.accel)
        self.c.line(f"  temp-1, temp-2: workshop rows {start}..{end} at {self.o.speed:g}x "
                    f"({self.o.speed / WORKSHOP_PERIOD_S:.0f} readings/s each)")
        self.c.line(f"  accel-1: {len(self.accel_spans)} recordings never used in training, "
                    "62.5 Hz, looping")
        if self.o.firmware:
            self.summary.firmware = self._firmware_device()
        else:
            self.summary.firmware = "skipped (--no-firmware)"
        self.c.line(f"  firmware: {self.summary.firmware}")

    def _firmware_device(self) -> str:
        """The real firmware in QEMU (Cortex-M3), on its UART, through the collector."""
        from services.device.emulator import EmulatorError, QemuDevice, make, toolchain_missing

        missing = toolchain_missing()
        if missing is not None:
            return f"{missing} is not installed: no firmware device (make test installs it)"
        try:
            self.c.live("  building the firmware for QEMU mps2-an385 ...")
            make("mps2-an385")
            qemu = QemuDevice("mps2-an385", log_path=self.o.workdir / "qemu.log")
            qemu.start()
        except (EmulatorError, OSError, subprocess.SubprocessError) as exc:
            return f"could not start the firmware in QEMU: {str(exc)[:200]}"
        self.qemu = qemu
        self.stack.add_device(FIRMWARE_DEVICE, "firmware in QEMU (Cortex-M3, UART)",
                              serial_port=qemu.url)
        return (f"{FIRMWARE_DEVICE}: edgeloop firmware in QEMU mps2-an385 (Cortex-M3) on "
                f"{qemu.url}, running its int8 forecaster on every reading")

    def _stored(self, device: str | None = None) -> int:
        # The status line asks several times a second: one read connection, kept open.
        if self._storage is None:
            self._storage = open_storage(self.stack.storage_url)
        return self._storage.count(device)

    def _status(self) -> str:
        parts = [f"{d.name} {d.published():,}" for d in self.stack.devices]
        stored = self._stored()
        alerts = len(self.watcher.alerts) if self.watcher else 0
        events = len(self.watcher.events) if self.watcher else 0
        seen = self.stack.inference_metrics.get_sample_value(
            "edgeloop_stream_readings_total") or 0
        return (f"published {' · '.join(parts)} | stored {stored:,} | edge saw {seen:,.0f} | "
                f"alerts {alerts} | events {events} | {time.monotonic() - self.started:.0f} s")

    def _collect(self) -> None:
        need = self.o.train_rows
        timeout = need * WORKSHOP_PERIOD_S / self.o.speed * 3 + 30
        self.c.wait_until(
            "readings in storage",
            lambda: all(self._stored(d) >= need for d in self.temp_devices),
            timeout, self._status, poll_s=0.5,
        )
        self.c.line(f"  {self._stored():,} readings stored so far")

    def _train(self, name: str, args: list[str]) -> Path:
        out = self.o.workdir / "train" / name
        cmd = [sys.executable, "-m", "services.trainer", *args, "--name", name,
               "--registry", self.stack.registry_url, "--out", str(out)]
        env = dict(os.environ, EDGELOOP_REGISTRY_TOKEN=self.stack.token, PYTHONUNBUFFERED="1")
        log_path = self.o.workdir / f"train-{name}.log"
        last = ""
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, cwd=REPO)
            if proc.stdout is None:
                raise StageFailed("could not read the trainer's output")
            for line in proc.stdout:
                log_file.write(line)
                text = line.strip()
                if text and not _native_noise(text):
                    # Show the trainer's own progress words, not its log prefix.
                    last = text.split(": ", 1)[-1] if " INFO " in text else text
                    self.c.live(f"  {name}: {last[:150]}")
            code = proc.wait()
        if code != 0:
            raise StageFailed(f"edgeloop train exited {code}: {last} (log: {log_path})")
        self.trained[name] = out
        return out

    def _train_forecaster(self) -> None:
        self._train(FORECAST_MODEL, [
            "--task", "forecast", "--source", self.stack.storage_url,
            "--devices", ",".join(self.temp_devices), "--target", "temp", "--window", "10",
            "--no-experiments",
        ])
        self._model_result(FORECAST_MODEL, "forecast")

    def _train_classifier(self) -> None:
        self._train(CLASSIFIER_MODEL, ["--task", "classify", "--source", f"ei:{self.train_dir}"])
        self._model_result(CLASSIFIER_MODEL, "classify")

    def _model_result(self, name: str, task: str) -> None:
        from services.trainer.registry.client import RegistryClient

        with RegistryClient(self.stack.registry_url, self.stack.token) as client:
            card = client.card(name)
            stored_ns = client.meta(name, card.version).created
        result = ModelResult(name=name, task=task, version=card.version, published=True,
                             metrics=_headline_metrics(card.metrics, card.baselines),
                             detail=_model_detail(card.metrics, card.description))
        self._published_at[(name, card.version)] = stored_ns / 1e9
        self.summary.models.append(result)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(result.metrics.items())[:6])
        self.c.line(f"  published {name} v{card.version}: {shown}")

    def _edge_models(self) -> dict[str, int]:
        try:
            doc = requests.get(f"{self.stack.http_url}/v1/models", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}
        models = doc.get("models", doc) if isinstance(doc, dict) else doc
        out: dict[str, int] = {}
        for m in models if isinstance(models, list) else []:
            if isinstance(m, dict) and "name" in m:
                out[str(m["name"])] = int(m.get("version") or 0)
        return out

    def _wait_loaded(self) -> None:
        def loaded() -> bool:
            live = self._edge_models()
            return all(live.get(m.name) == m.version for m in self.summary.models)

        self.c.wait_until("the edge to load the models", loaded, 120, self._status)
        for m in self.summary.models:
            m.loaded = True
            seen = self._first_served.get((m.name, m.version or 0))
            published = self._published_at.get((m.name, m.version or 0))
            if seen is not None and published is not None:
                m.load_delay_s = max(0.0, seen - published)
        self.c.line("  serving: " + ", ".join(f"{n} v{v}" for n, v in self._edge_models().items()))
        # History was fast-forwarded for training; from here the boards play closer to live.
        for device in self.temp_devices.values():
            device.set_speed(self.o.live_speed)
        self.c.line(f"  boards now replay at {self.o.live_speed:g}x "
                    f"({self.o.live_speed / WORKSHOP_PERIOD_S:.0f} readings/s each)")

    def _fire(self) -> None:
        if self.watcher is None:
            raise StageFailed("the watcher is not running")
        cmd = Command(id=f"fire-{uuid.uuid4().hex[:6]}", device=self.fire_device, site=SITE,
                      command=CommandName.FAULT, args={"kind": "fire"})
        self.watcher.client.publish(topics.cmd(SITE, self.fire_device), cmd.to_json(), qos=1)
        self.fire_injected_at = time.monotonic()
        if self.qemu is not None:
            mcu = Command(id=f"fire-{uuid.uuid4().hex[:6]}", device=FIRMWARE_DEVICE, site=SITE,
                          command=CommandName.FAULT, args={"kind": "fire"})
            self.watcher.client.publish(topics.cmd(SITE, FIRMWARE_DEVICE), mcu.to_json(), qos=1)
        self.c.wait_until(
            "a forecast-deviation alert from the fire",
            lambda: bool(self.watcher and self.watcher.raised(
                self.fire_device, AlertKind.FORECAST_DEVIATION)),
            60, self._status,
        )
        alert = self.watcher.raised(self.fire_device, AlertKind.FORECAST_DEVIATION)[0]
        self.c.line(f"  ALERT {alert.kind.value} on {alert.device}: {alert.message}")
        if self.qemu is not None:
            self.c.wait_until(
                "the firmware to flag its own readings",
                lambda: bool(self.watcher and self.watcher.raised(
                    FIRMWARE_DEVICE, AlertKind.DEVICE_ANOMALY)),
                60, self._status,
            )
            self.c.line(f"  ALERT device_anomaly on {FIRMWARE_DEVICE}: the firmware's own int8 "
                        "model flagged the fire on the device")

    def _free_fall(self) -> None:
        self.c.wait_until(
            "a freefall event",
            lambda: bool(self.watcher and self.watcher.events_of("accel-1", "freefall")),
            90, self._status,
        )
        if self.watcher is None:
            raise StageFailed("the watcher is not running")
        event = self.watcher.events_of("accel-1", "freefall")[0]
        self.c.line(f"  EVENT freefall on accel-1 (confidence {event.confidence:.2f})")

    def _requests(self) -> None:
        self.requester = Requester(self.stack)
        window = [28.5 + 0.0625 * (i % 3) for i in range(10)]
        for i in range(self.o.requests):
            req = InferenceRequest(id=f"r{i}", model=FORECAST_MODEL, inputs=window)
            took, doc = self.requester.mqtt(req)
            if "outputs" not in doc:
                raise StageFailed(f"MQTT request answered with an error: {doc}")
            self.summary.latencies_mqtt_s.append(took)
            took, hdoc = self.requester.http(FORECAST_MODEL, [window])
            self.summary.latencies_http_s.append(took)
        by_device = self.requester.mqtt(
            InferenceRequest(id="by-device", model=FORECAST_MODEL, device="temp-1", site=SITE))[1]
        self.c.line(f"  MQTT: {json.dumps(doc.get('outputs'))} from {doc.get('model')} "
                    f"v{doc.get('version')} ({doc.get('runtime')}); HTTP: "
                    f"{json.dumps(hdoc.get('predictions', hdoc.get('outputs')))}")
        self.c.line(f"  temp-1's next temperature from its live window: "
                    f"{json.dumps(by_device.get('outputs', by_device))}")
        host, port = self.stack.broker.host, self.stack.broker.port
        payload = json.dumps({"schema": "edgeloop.infer-request/1", "inputs": window})
        request_topic = topics.infer_request(FORECAST_MODEL)
        if self.stack.mqtt.protocol is Protocol.V5:
            mqtt_cmd = (f"mosquitto_rr -V 5 -h {host} -p {port} -t {request_topic} "
                        f"-e my/replies -m '{payload}'")
        else:  # MQTT 3.1.1: the reply topic travels in the payload
            payload_311 = json.dumps({**json.loads(payload), "reply_to": "my/replies"})
            mqtt_cmd = (f"mosquitto_sub -h {host} -p {port} -t my/replies -C 1 & "
                        f"mosquitto_pub -h {host} -p {port} -t {request_topic} "
                        f"-m '{payload_311}'")
        self.summary.try_it = [
            mqtt_cmd,
            f"curl -s -X POST {self.stack.http_url}/v1/models/{FORECAST_MODEL}:predict "
            f"-H 'Content-Type: application/json' -d '{json.dumps({'instances': [window]})}'",
        ]

    def _watch(self) -> None:
        end = time.monotonic() + self.o.duration_s
        self.c.wait_until("the watch period", lambda: time.monotonic() >= end,
                          self.o.duration_s + 5, self._status)

    def _drain(self) -> None:
        for device in self.stack.devices:
            device.collector.stop()

        def settled() -> bool:
            return all(self._stored(d.name) >= d.published() for d in self.stack.devices)

        try:
            self.c.wait_until("ingest to store what was published", settled, 30, self._status)
        except StageFailed:
            pass  # the summary reports what was lost
        for device in self.stack.devices:
            stored = self._stored(device.name)
            self.summary.devices.append(DeviceCount(device.name, device.kind,
                                                    published=device.published(), stored=stored))
        self.c.line(f"  {self.summary.stored:,} readings stored, {self.summary.lost:,} lost")

    # ------------------------------------------------------------------ report
    def _alerts_summary(self) -> None:
        if self.watcher is None:
            return
        fire = self.temp_devices.get(self.fire_device)
        for _, a in self.watcher.alerts:
            if a.state is not AlertState.RAISED:
                continue
            delay_s = delay_rows = None
            if fire is not None and a.device == self.fire_device and fire.fire.start_ts:
                delay_s = (a.ts - fire.fire.start_ts) / 1e9 if a.ts >= fire.fire.start_ts else None
                delay_rows = round(delay_s / WORKSHOP_PERIOD_S) if delay_s is not None else None
            self.summary.alerts.append(AlertSeen(a.device, a.kind.value, a.field, a.value,
                                                 a.expected, delay_s, delay_rows, a.message))
        for _, e in self.watcher.events:
            self.summary.events.append(EventSeen(e.device, e.label, e.confidence,
                                                 self._truth(e)))

    def _truth(self, event: Event) -> str | None:
        if self.accel is None:
            return None
        ts0 = self.accel.emitted[0][0] if self.accel.emitted else 0
        n = len(self.accel.rows)
        row = round((event.ts - ts0) / 16e6) % max(n, 1)
        for start, end, label in self.accel_spans:
            if start <= row < end:
                return label
        return None

    def _report(self) -> None:
        self.summary.duration_s = time.monotonic() - self.started
        self.summary.stages = list(self.c.stages)
        self._alerts_summary()
        out = self.o.out_dir
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):
            old.unlink()
        series = []
        for name, src in self.temp_devices.items():
            emitted = list(src.emitted)  # the device may still be appending
            if not emitted:
                continue
            ts = np.array([t for t, _ in emitted], dtype=np.int64)
            temp = np.array([v.get("temp", np.nan) for _, v in emitted])
            t0 = ts[0]
            alerts = [(a.ts - t0) / 1e9 for _, a in (self.watcher.alerts if self.watcher else [])
                      if a.device == name and a.state is AlertState.RAISED
                      and a.kind is AlertKind.FORECAST_DEVIATION]
            fire = (src.fire.start_ts - t0) / 1e9 if src.fire.start_ts else None
            pred_t, pred = self._replay_predictions(temp, ts)
            period = WORKSHOP_PERIOD_S
            zoom = (fire - 120 * period, fire + 150 * period) if fire else None
            series.append(SeriesPlot(name, (ts - t0) / 1e9, temp, (pred_t - t0) / 1e9, pred,
                                     alerts, fire, zoom=zoom))
        if series:
            self.summary.images["readings, edge predictions and alerts"] = str(
                plot_series(series, out / "readings.png").name)
        accel = list(self.accel.emitted) if self.accel is not None else []
        if self.accel is not None and accel:
            ts = np.array([t for t, _ in accel], dtype=np.int64)
            mag = np.array([np.sqrt(sum(x * x for x in v.values())) for _, v in accel])
            t0 = ts[0]
            n = len(self.accel.rows)
            spans = []
            for lap in range(len(ts) // n + 1):
                for s, e, label in self.accel_spans:
                    a, b = lap * n + s, min(lap * n + e, len(ts)) - 1
                    if a < len(ts) and b > a:
                        spans.append(((ts[a] - t0) / 1e9, (ts[b] - t0) / 1e9, label))
            events = [((e.ts - t0) / 1e9, e.label)
                      for _, e in (self.watcher.events if self.watcher else [])]
            self.summary.images["accelerometer and free-fall events"] = str(
                plot_accel((ts - t0) / 1e9, mag, events, spans, out / "accelerometer.png").name)
        if self.summary.latencies_mqtt_s or self.summary.latencies_http_s:
            self.summary.images["request latency"] = str(plot_latency(
                self.summary.latencies_mqtt_s, self.summary.latencies_http_s,
                out / "latency.png").name)
        model_images = {
            name: sorted((path / name / "report").glob("*.png")) if (path / name).is_dir()
            else sorted(path.rglob("*.png"))
            for name, path in self.trained.items()
        }
        write_html(self.summary, out, model_images)
        self.summary.write(out / "summary.json")
        self._print_summary()

    def _replay_predictions(
        self, temp: npt.NDArray[Any], ts: npt.NDArray[Any]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """What the edge's forecaster predicted for each reading, asked over HTTP."""
        if self._stack is None or FORECAST_MODEL not in self._edge_models():
            return np.empty(0, dtype=np.int64), np.empty(0)
        window = 10
        idx = np.arange(window, len(temp))
        if len(idx) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        preds: list[float] = []
        for chunk in np.array_split(idx, max(1, len(idx) // 512)):
            instances = [temp[i - window:i].tolist() for i in chunk]
            try:
                resp = requests.post(f"{self.stack.http_url}/v1/models/{FORECAST_MODEL}:predict",
                                     json={"instances": instances}, timeout=30)
                resp.raise_for_status()
                out = resp.json().get("predictions", [])
            except (requests.RequestException, ValueError):
                return np.empty(0, dtype=np.int64), np.empty(0)
            preds += [float(np.ravel(p)[0]) for p in out]
        return ts[idx[: len(preds)]], np.array(preds)

    def _print_summary(self) -> None:
        s = self.summary
        self.c.line("")
        self.c.line("summary")
        self.c.line(f"  readings   {s.stored:,} stored, {s.lost:,} lost "
                    f"({', '.join(f'{d.device} {d.stored:,}' for d in s.devices)})")
        for m in s.models:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in list(m.metrics.items())[:6])
            load = f", serving {m.load_delay_s:.1f} s after publish" if m.load_delay_s else ""
            self.c.line(f"  model      {m.name} v{m.version} ({m.task}): {shown}{load}")
        fire = [a for a in s.alerts if a.kind == "forecast_deviation"]
        for a in fire[:3]:
            self.c.line(f"  alert      {a.device} {a.kind}: {a.delay_readings} readings "
                        f"({a.delay_s:.0f} s of recording) after the fire started"
                        if a.delay_s is not None else f"  alert      {a.device} {a.kind}")
        other = len(s.alerts) - len(fire)
        if other:
            self.c.line(f"  alerts     {other} more (data quality: out of range, drift, ...)")
        falls = [e for e in s.events if e.label == "freefall"]
        right = sum(1 for e in falls if e.truth == "freefall")
        self.c.line(f"  events     {len(falls)} freefall events, {right} during recorded falls")
        if s.latencies_mqtt_s:
            mq = np.asarray(s.latencies_mqtt_s) * 1e3
            ht = np.asarray(s.latencies_http_s) * 1e3
            self.c.line(f"  latency    MQTT p50 {np.percentile(mq, 50):.1f} ms p99 "
                        f"{np.percentile(mq, 99):.1f} ms · HTTP p50 {np.percentile(ht, 50):.1f} ms")
        for name, ok in s.checks().items():
            self.c.line(f"  {'✓' if ok else '✗'} {name}")
        for cmd in s.try_it:
            self.c.line(f"  try: {cmd}")
        self.c.line(f"  report     {self.o.out_dir / 'index.html'}")

    def _keep_running(self) -> None:
        self.c.line("the stack keeps running (Ctrl-C to stop):")
        for name, port in self.stack.metrics_ports.items():
            self.c.line(f"  {name:<20} http://127.0.0.1:{port}/metrics")
        self.c.line(f"  registry             {self.stack.registry_url}/v1/models")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            self.c.line("stopping")

    def _stop(self) -> None:
        self._polling.set()
        for part in (self.requester, self.watcher):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: S110 - best effort on the way out
                    pass
        if self._storage is not None:
            self._storage.close()
        if self._stack is not None:
            self._stack.stop()
        if self.qemu is not None:
            self.qemu.stop()
