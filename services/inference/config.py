"""``edgeloop serve`` configuration: one typed object from a file, env and flags."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field, model_validator

from services.common.config import Settings
from services.common.mqtt import MqttSettings
from services.contract.topics import INFER_REQUEST_ALL
from services.inference.runtimes import AUTO_ORDER, RuntimeKind


class RuntimeChoice(enum.StrEnum):
    AUTO = "auto"  # LiteRT, else tflite-runtime
    LITERT = "litert"
    TFLITE_RUNTIME = "tflite-runtime"
    NUMPY = "numpy"  # the reference: needs reference.npz in the bundle

    def order(self) -> tuple[RuntimeKind, ...]:
        if self is RuntimeChoice.AUTO:
            return AUTO_ORDER
        return (RuntimeKind(self.value),)


class AaltoMode(enum.StrEnum):
    #: ``index,value,threshold`` → the model's columns, picked by ``columns``.
    COLUMNS = "columns"
    #: Keep the last ``window`` values of column ``value_column`` per topic; forecast.
    WINDOW = "window"


class AaltoSettings(Settings):
    """Adapter for the Aalto edge-ML tutorial's unchanged clients."""

    enabled: bool = False
    model: str | None = None
    request_filter: str = "request/+/+/+"
    #: ``{0}`` is the request topic's suffix after its first segment (``<station>/<dp>/<alarm>``).
    reply_topic: str = "predict/{0}"
    mode: AaltoMode = AaltoMode.WINDOW
    #: Which comma-separated fields of the payload feed the model (COLUMNS mode).
    columns: list[int] = Field(default_factory=lambda: [0, 1, 2])
    value_column: int = Field(default=1, ge=0)
    #: Plain-text reply; fields: model, version, prediction, outputs, index.
    reply_format: str = "{model} v{version}: {prediction}"
    qos: int = Field(default=0, ge=0, le=1)

    @model_validator(mode="after")
    def _needs_model(self) -> AaltoSettings:
        if self.enabled and not self.model:
            raise ValueError("aalto.model is required when aalto.enabled is true")
        return self


class AlertSettings(Settings):
    """Live-stream anomaly rules (the Arm workshop used 5-10 % relative deviation)."""

    enabled: bool = True
    #: Raise when |value - expected| > relative * |expected| ...
    relative: float = Field(default=0.08, gt=0)
    #: ... or when it exceeds k standard deviations of the recent error (0 = off).
    k_sigma: float = Field(default=0.0, ge=0)
    error_window: int = Field(default=50, ge=5)
    #: Consecutive off readings before raising (a spike is not a fire) ...
    raise_after: int = Field(default=3, ge=1)
    #: ... and consecutive good readings before clearing.
    clear_after: int = Field(default=3, ge=1)
    #: Hysteresis: clear only when the deviation is below this fraction of the threshold.
    clear_ratio: float = Field(default=0.7, gt=0, le=1)
    #: Data-quality checks against the card's training ranges.
    quality: bool = True
    #: Out of range: outside [min - margin*span, max + margin*span].
    range_margin: float = Field(default=0.1, ge=0)
    stuck_after: int = Field(default=30, ge=3)
    #: A gap is more than gap_factor times the model's interval between readings.
    gap_factor: float = Field(default=5.0, gt=1)
    #: Drift: the recent mean is more than drift_sigma training std from the training mean.
    drift_sigma: float = Field(default=3.0, gt=0)
    drift_window: int = Field(default=200, ge=10)


class ForwardSettings(Settings):
    """Edge filtering: send upstream only anomalies, their context and summaries."""

    enabled: bool = False
    #: Topic prefix upstream; messages keep their device-topic suffix.
    topic_prefix: str = "edgeloop/v1/upstream"
    #: Another broker (e.g. the cloud); None = the local broker.
    mqtt: MqttSettings | None = None
    summary_interval_s: float = Field(default=60.0, gt=0)
    #: Readings before an anomaly sent with it as context.
    context: int = Field(default=5, ge=0, le=100)


class StreamSettings(Settings):
    enabled: bool = True
    #: Model names to run on the stream (forecasters → alerts, classifiers → events);
    #: empty = every loaded forecaster and classifier.
    models: list[str] = Field(default_factory=list)
    site: str = "+"
    #: Readings queued for the stream worker before new ones are dropped (and counted).
    queue_max: int = Field(default=10_000, ge=10)
    #: Classifier windows advance by this many readings (hop).
    classify_hop: int = Field(default=8, ge=1)
    #: Minimum confidence for an Event; labels listed in ``quiet_labels`` emit no event.
    event_min_confidence: float = Field(default=0.6, ge=0, le=1)
    quiet_labels: list[str] = Field(default_factory=lambda: ["idle", "unknown", "normal"])
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)


class InferenceConfig(Settings):
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    client_id: str = "edgeloop-serve"
    http_host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the chosen one is logged.
    http_port: int = Field(default=8500, ge=0, le=65535)
    http_threads: int = Field(default=4, ge=1, le=64)
    registry: str | None = None
    public_key: Path | None = None
    model_dir: Path = Path("var/models")
    #: Announcements to follow; empty = all.
    models: list[str] = Field(default_factory=list)
    #: Local signed bundles loaded at start (``--bundle``); each needs a sibling
    #: ``<bundle>.json`` announcement unless ``trust_local_bundles`` is set.
    bundles: list[Path] = Field(default_factory=list)
    trust_local_bundles: bool = False
    keep_bundles: int = Field(default=3, ge=1, le=50)
    runtime: RuntimeChoice = RuntimeChoice.AUTO
    num_threads: int = Field(default=1, ge=1, le=16)
    #: Requests waiting for a worker before new ones get an ``overloaded`` error.
    queue_max: int = Field(default=256, ge=1)
    workers: int = Field(default=1, ge=1, le=16)
    #: Requests for one model merged into one runtime call (dynamic batching).
    max_batch: int = Field(default=64, ge=1, le=4096)
    #: Request topics to serve. Several replicas can split the load with an MQTT v5
    #: shared subscription: ``$share/<group>/edgeloop/v1/infer/+/request``.
    request_filter: str = INFER_REQUEST_ALL
    #: When no request is queued or running and no other request waits on the socket,
    #: answer on the MQTT network thread itself (no thread hand-off); otherwise queue.
    #: Off by default: measured here, handing every request to a worker gave lower p50
    #: and CPU per request (the network thread goes straight back to reading).
    inline_when_idle: bool = False
    download_timeout_s: float = Field(default=30.0, gt=0)
    #: Seconds between polls of the model dir for a rollback done by the CLI.
    cache_poll_s: float = Field(default=2.0, gt=0)
    aalto: AaltoSettings = Field(default_factory=AaltoSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    log_level: str | None = None
