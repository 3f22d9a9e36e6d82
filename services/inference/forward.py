"""Edge filtering: send upstream only what matters, and measure what that saves.

The Arm workshop's idea: the model on the edge decides what goes to the cloud. Instead
of every raw reading, the forwarder sends upstream

* each alert (raised and cleared) with the readings just before it as context
  (a ReadingBatch), and
* a periodic Summary per device (count, min, max, mean per field, anomalies seen).

``edgeloop_forward_bytes_total{direction="raw"}`` counts the telemetry bytes seen and
``{direction="forwarded"}`` the bytes sent upstream, so the saving is one PromQL ratio.
Upstream is a topic prefix on the local broker, or another broker (``forward.mqtt``);
topics are ``<prefix>/<site>/<device>/<alert|telemetry|summary>``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.contract.models import (
    Alert,
    AlertState,
    FieldStats,
    Reading,
    ReadingBatch,
    Sample,
    Summary,
)
from services.inference.config import ForwardSettings
from services.inference.metrics import InferenceMetrics

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]


@dataclass(slots=True)
class _Acc:
    start_ts: int
    end_ts: int = 0
    anomalies: int = 0
    stats: dict[str, list[float]] = field(default_factory=dict)  # count, min, max, sum

    def add(self, r: Reading) -> None:
        self.end_ts = max(self.end_ts, r.ts)
        for name, v in r.values.items():
            s = self.stats.get(name)
            if s is None:
                self.stats[name] = [1.0, v, v, v]
            else:
                s[0] += 1
                s[1] = min(s[1], v)
                s[2] = max(s[2], v)
                s[3] += v


class Forwarder:
    def __init__(
        self, settings: ForwardSettings, metrics: InferenceMetrics, publish: Publish,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._acc: dict[tuple[str, str], _Acc] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _topic(self, site: str, device: str, kind: str) -> str:
        return f"{self.settings.topic_prefix.rstrip('/')}/{site}/{device}/{kind}"

    def _send(self, topic: str, payload: bytes, kind: str) -> None:
        self._publish(topic, payload)
        self.metrics.forward_bytes.labels("forwarded").inc(len(payload))
        self.metrics.forward_messages.labels(kind).inc()

    # ------------------------------------------------------------------ inputs
    def on_reading(self, r: Reading, raw_bytes: int) -> None:
        self.metrics.forward_bytes.labels("raw").inc(raw_bytes)
        with self._lock:
            acc = self._acc.get((r.site, r.device))
            if acc is None:
                acc = self._acc[(r.site, r.device)] = _Acc(start_ts=r.ts)
            acc.add(r)

    def on_alert(self, alert: Alert, history: list[Reading]) -> None:
        if alert.state is AlertState.RAISED:
            with self._lock:
                acc = self._acc.get((alert.site, alert.device))
                if acc is not None:
                    acc.anomalies += 1
            context = history[-self.settings.context:] if self.settings.context else []
            if context:
                batch = ReadingBatch(
                    device=alert.device, site=alert.site,
                    samples=[Sample(ts=r.ts, seq=r.seq, values=r.values, flags=r.flags)
                             for r in context])
                self._send(self._topic(alert.site, alert.device, "telemetry"), batch.to_json(),
                           "context")
        self._send(self._topic(alert.site, alert.device, "alert"), alert.to_json(), "alert")

    # ------------------------------------------------------------------ summaries
    def flush(self) -> int:
        """Send one Summary per device seen since the last flush; return how many."""
        with self._lock:
            accs, self._acc = self._acc, {}
        for (site, device), acc in accs.items():
            fields = {
                name: FieldStats(count=int(s[0]), min=s[1], max=s[2], mean=s[3] / s[0])
                for name, s in acc.stats.items()
            }
            summary = Summary(device=device, site=site, start_ts=acc.start_ts,
                              end_ts=max(acc.end_ts, acc.start_ts), fields=fields,
                              anomalies=acc.anomalies)
            self._send(self._topic(site, device, "summary"), summary.to_json(), "summary")
        return len(accs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.summary_interval_s):
            try:
                self.flush()
            except Exception:
                log.exception("summary flush failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.flush()
