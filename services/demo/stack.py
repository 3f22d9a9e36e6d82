"""The demo's stack in one process: broker, registry, ingest, inference and devices.

Everything binds 127.0.0.1 on free ports. Training runs in a child process, so this
process never imports TensorFlow next to the edge's TFLite runtime.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.collector.config import CollectorConfig, SourceKind
from services.collector.service import Collector
from services.collector.source import Source
from services.common.metrics import new_registry
from services.common.mqtt import MqttSettings
from services.common.net import free_port
from services.demo.broker import DemoBroker, start_broker
from services.inference.config import AlertSettings, InferenceConfig, StreamSettings
from services.inference.service import InferenceService
from services.ingest.config import IngestConfig
from services.ingest.service import IngestService
from services.modelkit.signing import generate_keypair
from services.trainer.registry.config import HttpSettings, RegistrySettings
from services.trainer.registry.server import RegistryServer

log = logging.getLogger(__name__)
SITE = "demo"


@dataclass
class Device:
    name: str
    kind: str
    collector: Collector
    registry: CollectorRegistry
    source: Source

    def published(self) -> int:
        value = self.registry.get_sample_value("edgeloop_collector_readings_published_total")
        return int(value or 0)


@dataclass
class Stack:
    workdir: Path
    broker: DemoBroker
    mqtt: MqttSettings
    token: str
    public_key: Path
    signing_key: Path
    storage_url: str
    registry_server: RegistryServer
    ingest: IngestService
    inference: InferenceService
    inference_metrics: CollectorRegistry
    devices: list[Device] = field(default_factory=list)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def registry_url(self) -> str:
        return self.registry_server.base_url

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.inference.http_port}"

    def add_device(
        self, name: str, kind: str, source: Source | None = None, serial_port: str | None = None
    ) -> Device:
        """A collector for one device: a demo source, or a real serial port (``socket://``)."""
        registry = new_registry(process_metrics=False)
        port = free_port()
        config = CollectorConfig(
            source=SourceKind.SERIAL if serial_port else SourceKind.SIMULATE,
            serial_port=serial_port, device=name, site=SITE, mqtt=self.mqtt,
            outbox=self.workdir / f"outbox-{name}.db", metrics_port=port, batch_max=200,
        )
        collector = Collector(config, registry, source=source)
        source = collector.source
        collector.start()
        self.metrics_ports[f"collector {name}"] = port
        device = Device(name, kind, collector, registry, source)
        self.devices.append(device)
        return device

    def stop(self) -> None:
        """Devices first (their outboxes flush), then the edge, ingest, registry, broker."""
        for device in self.devices:
            _quietly(device.collector.stop)
        _quietly(self.inference.stop)
        _quietly(self.ingest.stop)
        _quietly(self.registry_server.stop)
        _quietly(self.broker.stop)


def _quietly(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except Exception:
        log.exception("error while stopping")


def start_stack(workdir: Path, *, embedded_broker: bool, alert_relative: float) -> Stack:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(workdir / "broker", prefer_embedded=embedded_broker)
    mqtt = MqttSettings(host=broker.host, port=broker.port, protocol=broker.protocol)
    keys = generate_keypair(workdir / "keys")
    token = secrets.token_urlsafe(24)
    from pydantic import SecretStr

    reg_settings = RegistrySettings(
        root=workdir / "registry", signing_key=keys.private_path, token=SecretStr(token),
        http=HttpSettings(host="127.0.0.1", port=0), mqtt=mqtt,
        mqtt_client_id="demo-registry",
    )
    registry_server = RegistryServer(reg_settings, new_registry(process_metrics=False))
    registry_server.start()

    storage_url = f"sqlite:///{workdir / 'readings.db'}"
    ingest_port = free_port()
    ingest = IngestService(
        IngestConfig.model_validate({
            "mqtt": mqtt, "client_id": "demo-ingest",
            "storage": {"url": storage_url}, "metrics_port": ingest_port,
            "batch_max": 2000, "batch_wait_s": 0.2,
        }),
        new_registry(process_metrics=False),
    )
    ingest.start()

    inference_metrics = new_registry(process_metrics=True)
    inference = InferenceService(
        InferenceConfig(
            mqtt=mqtt, client_id="demo-serve", http_port=0,
            registry=registry_server.base_url, public_key=keys.public_path,
            model_dir=workdir / "edge-models",
            stream=StreamSettings(
                site=SITE,
                alerts=AlertSettings(relative=alert_relative, raise_after=3, clear_after=5,
                                     stuck_after=400),
            ),
        ),
        inference_metrics,
    )
    inference.start()
    stack = Stack(
        workdir=workdir, broker=broker, mqtt=mqtt, token=token, public_key=keys.public_path,
        signing_key=keys.private_path, storage_url=storage_url,
        registry_server=registry_server, ingest=ingest, inference=inference,
        inference_metrics=inference_metrics,
    )
    stack.metrics_ports["ingest"] = ingest_port
    stack.metrics_ports["inference"] = inference.http_port
    stack.metrics_ports["registry"] = registry_server.port
    return stack
