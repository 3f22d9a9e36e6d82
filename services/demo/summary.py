"""What a demo run found: the numbers printed at the end and written to summary.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DeviceCount:
    device: str
    kind: str  # "climate replay", "accelerometer replay", "firmware (QEMU)"
    published: int = 0
    stored: int = 0
    duplicates: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.published - self.stored)


@dataclass
class AlertSeen:
    device: str
    kind: str
    field: str | None
    value: float | None
    expected: float | None
    #: Seconds from the injected fault's first reading to the alert, in reading time.
    delay_s: float | None
    #: Readings from the fault's start to the alert.
    delay_readings: int | None
    message: str


@dataclass
class EventSeen:
    device: str
    label: str
    confidence: float
    truth: str | None


@dataclass
class ModelResult:
    name: str
    task: str
    version: int | None = None
    published: bool = False
    loaded: bool = False
    #: Seconds from the announcement to the model serving at the edge.
    load_delay_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass
class DemoSummary:
    broker: str = ""
    storage: str = ""
    registry_url: str = ""
    http_url: str = ""
    duration_s: float = 0.0
    devices: list[DeviceCount] = field(default_factory=list)
    models: list[ModelResult] = field(default_factory=list)
    alerts: list[AlertSeen] = field(default_factory=list)
    events: list[EventSeen] = field(default_factory=list)
    latencies_mqtt_s: list[float] = field(default_factory=list)
    latencies_http_s: list[float] = field(default_factory=list)
    firmware: str = "not run"
    try_it: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    stages: list[tuple[str, float]] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(d.stored for d in self.devices)

    @property
    def lost(self) -> int:
        return sum(d.lost for d in self.devices)

    def checks(self) -> dict[str, bool]:
        fire = [a for a in self.alerts if a.kind == "forecast_deviation"]
        return {
            "readings stored, none lost": self.stored > 0 and self.lost == 0,
            "a model published and loaded": any(m.published and m.loaded for m in self.models),
            "fire alert raised": bool(fire),
            "free fall classified": any(
                e.label == "freefall" and e.truth == "freefall" for e in self.events
            ),
            "prediction answered over MQTT": bool(self.latencies_mqtt_s),
        }

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["stored"] = self.stored
        doc["lost"] = self.lost
        doc["checks"] = self.checks()
        for d, dev in zip(doc["devices"], self.devices, strict=True):
            d["lost"] = dev.lost
        return doc

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
