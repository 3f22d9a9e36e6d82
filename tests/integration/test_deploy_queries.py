"""Every PromQL expression in the alert rules and the Grafana dashboards, run against a
real Prometheus scraping the real services, returns data.

The services run in this process on free loopback ports, each on its own metrics
registry: six collectors, ingest, inference and the registry, around a real Mosquitto.
Each alert's condition is made true for real rather than assumed:

* device offline: a collector whose serial port (``socket://``) has nothing behind it;
* device silent: a serial port that opens and never sends a line;
* growing buffer / dropped readings: collectors whose broker is out of reach, one with a
  ten-reading outbox;
* inference errors: requests with the wrong input shape, next to good ones;
* failed model load: a retained announcement signed by the wrong key;
* bad input: a telemetry message that is not JSON (ingest rejects it, the stream drops it);
* drift: a device replaying readings far outside the model's training range;
* target down: a scrape target with nothing listening.

The expressions are read from the files (``deploy/monitoring/...``), so a new panel or
rule is covered without touching this test. Grafana variables are substituted the way
Grafana would with "All" selected. The InfluxDB (Flux) panels cannot run here (no
InfluxDB 2.x server installs on these machines); they are checked for shape only.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import requests
import yaml  # type: ignore[import-untyped]
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr

from services.collector.config import CollectorConfig, SourceKind
from services.collector.service import Collector
from services.common.metrics import new_registry
from services.common.mqtt import MqttSettings
from services.contract import topics
from services.inference.config import AlertSettings, InferenceConfig, StreamSettings
from services.inference.service import InferenceService
from services.ingest.config import IngestConfig, StorageSettings
from services.ingest.service import IngestService
from services.trainer.registry.client import RegistryClient
from services.trainer.registry.config import HttpSettings, RegistrySettings
from services.trainer.registry.server import RegistryServer
from tests.support import tiny_models as tm
from tests.support.prometheus import Prometheus
from tests.support.servers import LOOPBACK, Mosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "monitoring" / "prometheus" / "edgeloop.rules.yml"
DASHBOARDS = sorted((REPO / "deploy" / "monitoring" / "grafana" / "dashboards").glob("*.json"))
#: What Grafana puts in place of its variables, with "All" selected.
GRAFANA_VARS = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "5m",
                "$device": ".*", "$instance": ".*"}
DEADLINE_S = 150.0


# ---------------------------------------------------------------------------- expressions
def rule_expressions() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {f"rule {r['alert']}": " ".join(str(r["expr"]).split())
            for g in doc["groups"] for r in g["rules"]}


def _grafana(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def dashboard_expressions() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", panel["datasource"])["type"] != "prometheus":
                    continue
                out[f"{path.stem}: {panel['title']} [{target['refId']}]"] = _grafana(
                    target["expr"])
        for var in doc["templating"]["list"]:
            query = var.get("query")
            if var.get("datasource", {}).get("type") == "prometheus" and isinstance(query, dict):
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query["query"])
                assert m, query
                out[f"{path.stem}: variable {var['name']}"] = f"group by ({m[2]}) ({m[1]})"
    return out


def test_flux_panels_query_what_ingest_writes() -> None:
    # Shape only: no InfluxDB 2.x server can run here (see the module docstring).
    flux = [t["query"] for path in DASHBOARDS for p in json.loads(path.read_text())["panels"]
            for t in p["targets"] if t["datasource"]["type"] == "influxdb"]
    assert flux, "the raw readings dashboard has no InfluxDB panels"
    from services.ingest.storage import MEASUREMENT

    for query in flux:
        assert f'r._measurement == "{MEASUREMENT}"' in query
        assert "r.device" in query and "v.timeRangeStart" in query


# ---------------------------------------------------------------------------- the services
class SilentBoard:
    """A serial-over-TCP port that accepts the collector and never says anything."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _publish(mosquitto: Mosquitto, topic: str, payload: bytes, *, retain: bool = False) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:6]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


class Fleet:
    def __init__(self, mosquitto: Mosquitto, tmp: Path) -> None:
        self.tmp = tmp
        self.mqtt = MqttSettings(host=mosquitto.host, port=mosquitto.port)
        dead_mqtt = MqttSettings(host=LOOPBACK, port=free_port())
        self.silent = SilentBoard()
        hot = tmp / "hot.csv"
        hot.write_text("temp,humidity,pressure\n" + "".join(
            f"{40.0 + (i % 5) * 0.1},{45.0},{993.0}\n" for i in range(80)))
        specs: list[dict[str, Any]] = [
            {"device": "pi-live", "source": SourceKind.SIMULATE, "interval": 0.05},
            {"device": "pi-unplugged", "source": SourceKind.SERIAL,
             "serial_port": f"socket://{LOOPBACK}:{free_port()}"},
            {"device": "pi-silent", "source": SourceKind.SERIAL,
             "serial_port": f"socket://{LOOPBACK}:{self.silent.port}"},
            {"device": "pi-nobroker", "source": SourceKind.SIMULATE, "interval": 0.01,
             "mqtt": dead_mqtt},
            {"device": "pi-full", "source": SourceKind.SIMULATE, "interval": 0.01,
             "mqtt": dead_mqtt, "outbox_max": 10},
            {"device": "pi-hot", "source": SourceKind.REPLAY, "csv": hot, "speed": 10.0,
             "timestamps": "now"},
        ]
        self.collectors: list[Collector] = []
        for spec in specs:
            cfg = CollectorConfig(**{
                "mqtt": self.mqtt, "outbox": tmp / f"{spec['device']}.db",
                "metrics_port": free_port(), "site": "lab", **spec})
            self.collectors.append(Collector(cfg, new_registry()))
        self.ingest = IngestService(IngestConfig(
            mqtt=self.mqtt, client_id="ingest-q", metrics_port=free_port(),
            storage=StorageSettings(url=f"sqlite:///{tmp / 'store.db'}")), new_registry())
        tiny = tm.build()
        keys = tm.keypair(tmp / "keys")
        self.bundle = tm.signed_bundle(tiny, tm.FORECAST, 3, keys, tmp / "bundles")
        tm.write_announcement(self.bundle)
        # Signed by a key the edge does not trust: the update must be refused.
        self.forged = tm.signed_bundle(tiny, tm.FORECAST, 4, tm.keypair(tmp / "other"),
                                       tmp / "forged")
        self.inference = InferenceService(InferenceConfig(
            mqtt=self.mqtt, client_id="serve-q", http_port=0, public_key=keys.public_path,
            model_dir=tmp / "models", bundles=[self.bundle.path],
            stream=StreamSettings(alerts=AlertSettings(drift_window=10))), new_registry())
        self.token = uuid.uuid4().hex
        self.registry = RegistryServer(RegistrySettings(
            root=tmp / "registry", signing_key=keys.private_path,
            token=SecretStr(self.token), http=HttpSettings(host=LOOPBACK, port=0)),
            new_registry())
        self.bundle_server = tm.BundleServer(tmp / "forged")
        self.mosquitto = mosquitto

    def start(self) -> None:
        self.ingest.start()
        self.inference.start()
        self.registry.start()
        self.bundle_server.__enter__()
        for c in self.collectors:
            c.start()

    def stop(self) -> None:
        for c in self.collectors:
            c.stop()
        self.bundle_server.__exit__(None, None, None)
        self.registry.stop()
        self.inference.stop()
        self.ingest.stop()
        self.silent.close()

    def targets(self) -> dict[str, list[str]]:
        collectors = [f"{LOOPBACK}:{c.metrics_port}" for c in self.collectors]
        return {
            "edgeloop-collector": collectors,
            # The second ingest target has nothing behind it: a target that is down.
            "edgeloop-ingest": [f"{LOOPBACK}:{self.ingest.metrics_port}",
                                f"{LOOPBACK}:{free_port()}"],
            "edgeloop-inference": [f"{LOOPBACK}:{self.inference.http_port}"],
            "edgeloop-registry": [f"{LOOPBACK}:{self.registry.port}"],
        }

    def traffic(self) -> None:
        """Good and bad requests, a model in the registry, a forged model announced."""
        base = f"http://{LOOPBACK}:{self.inference.http_port}"
        good = self.bundle.card.test_vectors[0].input
        for _ in range(10):
            requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                          json={"instances": [good]}, timeout=5)
        requests.post(f"{base}/v1/models/{tm.FORECAST}:predict",
                      json={"instances": [[1.0]]}, timeout=5)
        requests.post(f"{base}/v1/models/no-such-model:predict",
                      json={"instances": [good]}, timeout=5)
        # Bad input on the wire: rejected by ingest and dropped by the stream, counted.
        _publish(self.mosquitto, topics.telemetry("lab", "pi-garbage"), b"{not json")


def _prometheus_config(targets: dict[str, list[str]], rules: Path) -> tuple[str, list[str]]:
    main_job = "edgeloop-collector"
    extra = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(t)}\n"
        for job, t in targets.items() if job != main_job)
    return extra + f"rule_files:\n  - {rules}\n", targets[main_job]


@pytest.fixture
def fleet(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(mosquitto, tmp_path)
    f.start()
    try:
        yield f
    finally:
        f.stop()


def test_every_rule_and_dashboard_query_returns_data(
    fleet: Fleet, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    rules = tmp_path / "edgeloop.rules.yml"
    rules.write_text(RULES.read_text())
    extra, collectors = _prometheus_config(fleet.targets(), rules)
    prom = Prometheus(tmp_path / "prometheus", collectors, job="edgeloop-collector",
                      extra_scrape_configs=extra)
    prom.start()
    try:
        prom.wait_for_scrape(60)
        client = RegistryClient(f"http://{LOOPBACK}:{fleet.registry.port}", fleet.token)
        client.publish(fleet.bundle.path)
        forged = fleet.forged.announcement(fleet.bundle_server.url(fleet.forged.path.name))
        _publish(mosquitto, topics.model_announce(tm.FORECAST), forged.to_json(), retain=True)
        queries = {**rule_expressions(), **dashboard_expressions()}
        pending = dict(queries)
        found: dict[str, int] = {}
        seconds: dict[str, float] = {}
        started = time.monotonic()
        while pending and time.monotonic() - started < DEADLINE_S:
            fleet.traffic()
            for name, expr in list(pending.items()):
                result = prom.query(expr)
                if result:
                    found[name] = len(result)
                    seconds[name] = time.monotonic() - started
                    del pending[name]
            time.sleep(1.0)
        took = time.monotonic() - started
        for name in queries:
            print(f"{'ok ' if name in found else 'NO '} {found.get(name, 0):3d} series "
                  f"{seconds.get(name, -1):5.1f} s  {name}")
        print(f"{len(found)}/{len(queries)} expressions returned data within {took:.0f} s")
        assert not pending, "no data for:\n" + "\n".join(f"{n}: {e}" for n, e in pending.items())
        # Prometheus itself loaded and evaluated the rule file without errors.
        groups = requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules_seen = {r["name"]: r for g in groups for r in g["rules"]}
        assert set(rules_seen) == {n.removeprefix("rule ") for n in rule_expressions()}
        assert all(r["health"] == "ok" for r in rules_seen.values()), rules_seen
    finally:
        prom.stop()
