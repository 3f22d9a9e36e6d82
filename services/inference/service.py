"""``InferenceService``: wires runtimes, transports, the stream and updates together.

Shape (after Frigate's ``app.py``): ``start()`` brings parts up inputs-last; ``stop()``
marks the service not ready, stops taking input, answers what was already accepted,
flushes summaries, then disconnects. ``/healthz`` answers until the very end.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry

from services.common.mqtt import MqttClient
from services.contract.topics import DeviceTopic, subscription
from services.inference.aalto import AaltoAdapter
from services.inference.cache import BundleCache
from services.inference.config import InferenceConfig
from services.inference.forward import Forwarder
from services.inference.http_api import HttpServer, create_app
from services.inference.metrics import InferenceMetrics
from services.inference.models import ModelSet
from services.inference.mqtt_rr import MqttRequestHandler
from services.inference.serving import Server
from services.inference.stream import StreamProcessor
from services.inference.updates import ModelUpdater
from services.modelkit.signing import load_public_key

log = logging.getLogger(__name__)


class InferenceService:
    def __init__(self, config: InferenceConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry
        self.metrics = InferenceMetrics(registry)
        self.models = ModelSet(keep_versions=2)
        self.cache = BundleCache(config.model_dir, config.keep_bundles)
        key = load_public_key(config.public_key) if config.public_key else None
        self.updater = ModelUpdater(
            self.models, self.cache, self.metrics, public_key=key,
            runtimes=config.runtime.order(), num_threads=config.num_threads,
            names=config.models, registry_url=config.registry,
            download_timeout_s=config.download_timeout_s, cache_poll_s=config.cache_poll_s,
        )
        self.server = Server(self.models, self.metrics, queue_max=config.queue_max,
                             workers=config.workers, max_batch=config.max_batch)
        # Manual acknowledgements: a request is PUBACKed once answered, so the persistent
        # session keeps whatever this process took but did not answer.
        self.client = MqttClient(config.mqtt, config.client_id, manual_ack=True,
                                 on_connection_change=self._on_connection)
        self.requests = MqttRequestHandler(self.client, self.server, self.metrics,
                                           config.request_filter,
                                           inline_when_idle=config.inline_when_idle)
        self.aalto = (AaltoAdapter(config.aalto, self.client, self.server, self.models)
                      if config.aalto.enabled else None)
        self.upstream: MqttClient | None = None
        self.forwarder: Forwarder | None = None
        fwd = config.stream.forward
        if config.stream.enabled and fwd.enabled:
            if fwd.mqtt is not None:
                self.upstream = MqttClient(fwd.mqtt, f"{config.client_id}-upstream")
            up = self.upstream or self.client

            def publish_up(topic: str, payload: bytes) -> None:
                up.publish(topic, payload, qos=1)

            self.forwarder = Forwarder(fwd, self.metrics, publish_up)
        self.stream: StreamProcessor | None = None
        if config.stream.enabled:
            self.stream = StreamProcessor(
                config.stream, self.models, self.metrics,
                self._publish,
                forward=self.forwarder.on_reading if self.forwarder else None,
                forward_alert=self.forwarder.on_alert if self.forwarder else None,
                ack=self.client.ack,
            )
            self.server.set_window_source(self.stream.windows.window_input)
        self.http: HttpServer | None = None
        self._ready = threading.Event()
        self._started = False

    def _publish(self, topic: str, payload: bytes) -> None:
        # Alerts and events: QoS 1, not retained (a stale alert must not greet new clients).
        self.client.publish(topic, payload, qos=1)

    # ------------------------------------------------------------------ readiness
    def _on_connection(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)

    def not_ready(self) -> list[str]:
        missing = []
        if not self._ready.is_set():
            missing.append("starting" if not self._started else "stopping")
        if len(self.models) == 0:
            missing.append("models")
        if not self.client.connected:
            missing.append("broker")
        return missing

    @property
    def http_port(self) -> int:
        if self.http is None:
            raise RuntimeError("HTTP server not started")
        return self.http.port

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._started = True
        self.updater.load_cached()
        for path in self.config.bundles:
            self.updater.load_local(path, self.config.trust_local_bundles)
        self.server.start()
        app = create_app(self.server, self.models, self.registry, self.not_ready)
        self.http = HttpServer(app, self.config.http_host, self.config.http_port,
                               self.config.http_threads)
        self.http.start()
        self.updater.start(self.client)
        self.requests.start()
        if self.aalto is not None:
            self.aalto.start()
        if self.stream is not None:
            self.stream.start()
            self.client.subscribe(
                subscription(DeviceTopic.TELEMETRY, site=self.config.stream.site),
                self.stream.on_message, qos=1)
        if self.forwarder is not None:
            if self.upstream is not None:
                self.upstream.start()
            self.forwarder.start()
        self.client.start()
        self._ready.set()
        log.info("serving %d model(s); HTTP on %s:%d; MQTT %s:%d", len(self.models),
                 self.config.http_host, self.http.port, self.config.mqtt.host,
                 self.config.mqtt.port)

    def stop(self) -> None:
        """Not ready → stop input → answer what was accepted → flush → disconnect."""
        self._ready.clear()
        try:
            self.requests.close()
            self.updater.stop()
            self.server.stop()
            if self.stream is not None:
                self.stream.stop()
            if self.forwarder is not None:
                self.forwarder.stop()
            self.requests.flush(timeout_s=3.0)
        finally:
            self.client.stop()
            if self.upstream is not None:
                self.upstream.stop()
            if self.http is not None:
                self.http.stop()
            log.info("inference service stopped")
