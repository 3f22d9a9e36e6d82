"""The live telemetry stream: windows per device, forecasts, alerts, events, data quality.

The paho callback only decodes and queues readings (a bounded queue: when it is full the
reading is dropped and counted, never blocking the network thread). One worker thread
then, per reading:

* checks data quality against the training ranges in the model cards (out of range,
  stuck sensor, gaps, drift) and the firmware's own ``anomaly`` flag;
* asks each forecaster for the value it expected from the device's window, observes the
  error in the ``edgeloop_forecast_*_error`` histograms, and raises a
  ``forecast_deviation`` alert when the reading is off by more than the configured
  relative amount (or k standard deviations of the recent error), debounced;
* every ``classify_hop`` readings runs each classifier on the device's window and
  publishes an Event for a label that is not a quiet one (for example ``freefall``);
* feeds the edge-filtering forwarder.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from services.common.logs import RateLimitedLog
from services.contract import topics
from services.contract.card import FieldRange, ModelCard
from services.contract.decode import Rejected, decode_telemetry
from services.contract.models import (
    Alert,
    AlertKind,
    AlertState,
    Event,
    ModelTask,
    Reading,
    Severity,
)
from services.inference import pipeline
from services.inference.alerting import Debouncer, Verdict, deviation_verdict
from services.inference.config import StreamSettings
from services.inference.metrics import InferenceMetrics
from services.inference.models import LoadedModel, ModelSet
from services.inference.runtimes import RuntimeError_, ShapeError

log = logging.getLogger(__name__)

#: Readings kept per device beyond the longest model window (forwarder context, stuck checks).
HISTORY_EXTRA = 128

Publish = Callable[[str, bytes], None]


@dataclass(slots=True)
class _Device:
    site: str
    device: str
    rows: deque[Reading]
    last_ts: int = 0
    since_classify: int = 0
    last_event: dict[str, str] = field(default_factory=dict)
    #: Per (model, field): recent forecast errors (for the k-sigma rule).
    errors: dict[str, deque[float]] = field(default_factory=dict)
    #: Per field: recent values for drift.
    recent: dict[str, deque[float]] = field(default_factory=dict)
    #: Per forecaster: its input rows with anomalous target values replaced by the
    #: forecast, so one spike does not poison the next ``window`` forecasts.
    clean: dict[str, deque[list[float]]] = field(default_factory=dict)


class WindowStore:
    """Per-device recent readings, shared with request handling (``device`` requests)."""

    def __init__(self, history: int) -> None:
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], _Device] = {}
        self._by_name: dict[str, tuple[str, str]] = {}
        self.history = history

    def device(self, site: str, device: str) -> _Device:
        key = (site, device)
        with self._lock:
            d = self._devices.get(key)
            if d is None or d.rows.maxlen != self.history:
                rows = deque(d.rows if d else (), maxlen=self.history)
                d = _Device(site, device, rows) if d is None else d
                d.rows = rows
                self._devices[key] = d
                self._by_name[device] = key
            return d

    def append(self, d: _Device, reading: Reading) -> None:
        with self._lock:
            d.rows.append(reading)

    def rows(self, card: ModelCard, device: str, site: str | None,
             before_last: bool = False) -> list[list[float]] | None:
        """The last ``window`` rows of the card's fields, oldest first, or None."""
        with self._lock:
            key = (site, device) if site is not None else self._by_name.get(device)
            d = self._devices.get(key) if key is not None else None
            if d is None:
                return None
            items = list(d.rows)
        if before_last:
            items = items[:-1]
        fields = card.input.fields
        window = card.input.window
        out: list[list[float]] = []
        for r in reversed(items):
            if not all(f in r.values for f in fields):
                continue
            out.append([r.values[f] for f in fields])
            if len(out) == window:
                break
        if len(out) < window:
            return None
        out.reverse()
        return out

    def window_input(self, card: ModelCard, device: str, site: str | None) -> Any | None:
        rows = self.rows(card, device, site)
        return None if rows is None else pipeline.window_input(card, rows)


class StreamProcessor:
    def __init__(
        self,
        settings: StreamSettings,
        models: ModelSet,
        metrics: InferenceMetrics,
        publish: Publish,
        *,
        forward: Callable[[Reading, int], None] | None = None,
        forward_alert: Callable[[Alert, list[Reading]], None] | None = None,
        clock: Callable[[], float] = time.time,
        ack: Callable[[int, int], object] | None = None,
    ) -> None:
        self.settings = settings
        self._ack = ack
        self.models = models
        self.metrics = metrics
        self._publish = publish
        self._forward = forward
        self._forward_alert = forward_alert
        self._clock = clock
        a = settings.alerts
        self.windows = WindowStore(history=HISTORY_EXTRA + max(a.stuck_after, 64))
        self.debounce = Debouncer(a.raise_after, a.clear_after)
        self._queue: queue.Queue[tuple[list[Reading], int] | None] = queue.Queue(
            maxsize=settings.queue_max)
        self._thread: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)
        self._idle = threading.Event()
        self._idle.set()
        self.alerts_published: list[Alert] = []

    # ------------------------------------------------------------------ plumbing
    def on_message(self, msg: paho.MQTTMessage) -> None:
        """paho callback: decode and queue; never block the network thread."""
        try:
            self._take(msg)
        finally:
            if self._ack is not None:
                self._ack(msg.mid, int(msg.qos))

    def _take(self, msg: paho.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        try:
            readings = decode_telemetry(msg.topic, payload, now_ns=time.time_ns())
        except Rejected as exc:
            self.metrics.readings_dropped.labels(exc.reason.value).inc()
            self._rlog.warning(f"tele-{exc.reason.value}", "telemetry on %s refused: %s",
                               msg.topic, exc.detail)
            return
        self.submit(readings, len(payload))

    def submit(self, readings: list[Reading], raw_bytes: int) -> bool:
        try:
            self._idle.clear()
            self._queue.put_nowait((readings, raw_bytes))
        except queue.Full:
            self.metrics.readings_dropped.labels("queue_full").inc(len(readings))
            self._rlog.warning("tele-full", "stream queue full; dropping readings")
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None

    def wait_idle(self, timeout_s: float) -> bool:
        """True once everything queued so far is processed (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05) and self._queue.empty():
                return True
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            readings, raw_bytes = item
            try:
                per = max(1, raw_bytes // max(1, len(readings)))
                for r in readings:
                    self.process(r, per)
            except Exception:
                log.exception("stream processing failed")
            if self._queue.empty():
                self._idle.set()

    # ------------------------------------------------------------------ per reading
    def _stream_models(self) -> list[LoadedModel]:
        names = set(self.settings.models)
        return [m for m in self.models.active()
                if (not names or m.name in names)
                and m.card.task in (ModelTask.FORECAST, ModelTask.CLASSIFY)]

    def process(self, r: Reading, raw_bytes: int = 0) -> None:
        self.metrics.readings.inc()
        self.metrics.stream_lag.set(max(0.0, self._clock() - r.ts / 1e9))
        d = self.windows.device(r.site, r.device)
        models = self._stream_models()
        a = self.settings.alerts
        if a.enabled:
            self._device_flag(d, r)
            for m in models:
                if m.card.task is ModelTask.FORECAST:
                    self._forecast(d, r, m)
            if a.quality:
                self._quality(d, r, models)
        self.windows.append(d, r)
        d.last_ts = r.ts
        d.since_classify += 1
        if d.since_classify >= self.settings.classify_hop:
            d.since_classify = 0
            for m in models:
                if m.card.task is ModelTask.CLASSIFY:
                    self._classify(d, r, m)
        if self._forward is not None:
            self._forward(r, raw_bytes)

    def _device_flag(self, d: _Device, r: Reading) -> None:
        flagged = "anomaly" in r.flags
        state = self.debounce.observe(
            d.site, d.device, AlertKind.DEVICE_ANOMALY, "", Verdict.BAD if flagged
            else Verdict.GOOD, r.ts, raise_after=1)
        if state is not None:
            self._alert(d, r, AlertKind.DEVICE_ANOMALY, state, None,
                        message="the device's own model flagged this reading" if flagged
                        else "the device stopped flagging readings",
                        severity=Severity.WARNING)

    def _forecast(self, d: _Device, r: Reading, m: LoadedModel) -> None:
        card = m.card
        target = card.input.target or card.input.fields[0]
        if target not in r.values or not all(f in r.values for f in card.input.fields):
            return
        row = [r.values[f] for f in card.input.fields]
        clean = d.clean.get(m.name)
        if clean is None or clean.maxlen != card.input.window:
            clean = d.clean[m.name] = deque(maxlen=card.input.window)
        if len(clean) < card.input.window:
            clean.append(row)
            return
        try:
            y = m.predict_raw([pipeline.window_input(card, list(clean))])
        except (pipeline.InputError, ShapeError, RuntimeError_, ValueError) as exc:
            self._rlog.warning(f"fc-{m.name}", "forecast with %s failed: %s", m.name, exc)
            clean.append(row)
            return
        expected = float(np.ravel(y)[0])
        value = r.values[target]
        self._observe_error(m.name, target, value, expected)
        a = self.settings.alerts
        key = f"{m.name}/{target}"
        errs = d.errors.setdefault(key, deque(maxlen=a.error_window))
        sigma, bias = None, 0.0
        if len(errs) >= max(5, a.error_window // 5):
            sigma, bias = float(np.std(errs)), float(np.mean(errs))
        rng = card.training_ranges.get(target)
        verdict, score = deviation_verdict(
            value, expected, relative=a.relative, sigma=sigma, k_sigma=a.k_sigma,
            clear_ratio=a.clear_ratio, bias=bias,
            # Nothing finer than the sensor's resolution, or 0.1 % of the value, is news.
            sigma_floor=max((rng.step or 0.0) if rng else 0.0, 1e-3 * abs(expected)))
        if verdict is Verdict.BAD:
            row[card.input.fields.index(target)] = expected
        else:
            errs.append(value - expected)
        clean.append(row)
        state = self.debounce.observe(d.site, d.device, AlertKind.FORECAST_DEVIATION, target,
                                      verdict, r.ts)
        if state is not None:
            pct = abs(value - expected) / max(abs(expected), 1e-9) * 100
            self._alert(
                d, r, AlertKind.FORECAST_DEVIATION, state, target, value=value,
                expected=expected, score=score, model=m,
                message=(f"{target} {value:.3f} is {pct:.1f} % off the forecast {expected:.3f}"
                         if state is AlertState.RAISED
                         else f"{target} back within the forecast ({pct:.1f} % off)"),
                severity=Severity.CRITICAL)

    def _observe_error(self, model: str, target: str, value: float, expected: float) -> None:
        err = abs(value - expected)
        # One NaN would turn the histogram's sum into NaN for the life of the process.
        if not math.isfinite(err):
            return
        self.metrics.forecast_abs_error.labels(model, target).observe(err)
        self.metrics.forecast_relative_error.labels(model, target).observe(
            err / max(abs(expected), 1e-9))

    def _classify(self, d: _Device, r: Reading, m: LoadedModel) -> None:
        raw = self.windows.window_input(m.card, d.device, d.site)
        if raw is None:
            return
        try:
            probs = np.ravel(m.predict_raw([raw]))
        except (pipeline.InputError, ShapeError, RuntimeError_, ValueError) as exc:
            self._rlog.warning(f"cls-{m.name}", "classify with %s failed: %s", m.name, exc)
            return
        labels = m.card.labels
        if not labels or len(labels) != probs.shape[0]:
            return
        i = int(np.argmax(probs))
        label, conf = labels[i], float(min(1.0, max(0.0, probs[i])))
        prev = d.last_event.get(m.name)
        d.last_event[m.name] = label
        if label in self.settings.quiet_labels or conf < self.settings.event_min_confidence:
            return
        if prev == label:
            return  # the same event continuing: one message per occurrence
        rows = [x for x in d.rows if all(f in x.values for f in m.card.input.fields)]
        start = rows[-m.card.input.window].seq if len(rows) >= m.card.input.window else None
        ev = Event(device=d.device, site=d.site, ts=r.ts, label=label, confidence=conf,
                   model=m.name, model_version=m.version, window_start_seq=start,
                   window_end_seq=r.seq)
        self.metrics.events.labels(label).inc()
        self._publish(topics.event(d.site, d.device), ev.to_json())
        log.info("event %s on %s/%s (%.2f, %s v%d)", label, d.site, d.device, conf, m.name,
                 m.version)

    def _quality(self, d: _Device, r: Reading, models: Sequence[LoadedModel]) -> None:
        a = self.settings.alerts
        ranges: dict[str, FieldRange] = {}
        interval: float | None = None
        for m in models:
            for fname, frange in m.card.training_ranges.items():
                ranges.setdefault(fname, frange)
            # Only a model this device feeds sets its expected pace: an accelerometer
            # classifier's 16 ms says nothing about a thermometer that reads every 3 s.
            if m.card.input.interval_s and all(f in r.values for f in m.card.input.fields):
                interval = max(interval or 0.0, m.card.input.interval_s)
        # Gap: judged once per reading, against the models' sampling interval.
        if interval and d.last_ts:
            gap_s = (r.ts - d.last_ts) / 1e9
            verdict = Verdict.BAD if gap_s > a.gap_factor * interval else Verdict.GOOD
            if verdict is Verdict.BAD:
                self.metrics.quality.labels(AlertKind.GAP.value).inc()
            state = self.debounce.observe(d.site, d.device, AlertKind.GAP, "", verdict, r.ts,
                                          raise_after=1)
            if state is not None:
                self._alert(d, r, AlertKind.GAP, state, None, value=gap_s,
                            message=(f"{gap_s:.1f} s since the previous reading "
                                     f"(model interval {interval:g} s)"
                                     if state is AlertState.RAISED else "readings regular again"))
        for name, value in r.values.items():
            rng = ranges.get(name)
            if rng is None:
                continue
            span = max(rng.max - rng.min, 1e-9)
            # Hysteresis: raised beyond the range plus its margin, cleared only once back
            # inside the range itself, so a sensor hovering at the margin does not flap.
            if self.debounce.is_raised(d.site, d.device, AlertKind.OUT_OF_RANGE, name):
                lo, hi = rng.min, rng.max
            else:
                lo, hi = rng.min - a.range_margin * span, rng.max + a.range_margin * span
            out = value < lo or value > hi
            if out:
                self.metrics.quality.labels(AlertKind.OUT_OF_RANGE.value).inc()
            self._quality_alert(d, r, AlertKind.OUT_OF_RANGE, name, out, value,
                                f"{name} {value:g} outside the training range "
                                f"[{rng.min:g}, {rng.max:g}]")
            # Stuck: the last N values identical (within half the sensor's resolution).
            hist = [x.values[name] for x in list(d.rows)[-(a.stuck_after - 1):]
                    if name in x.values]
            tol = (rng.step or 0.0) / 2
            stuck = len(hist) >= a.stuck_after - 1 and all(abs(h - value) <= tol for h in hist)
            if stuck:
                self.metrics.quality.labels(AlertKind.STUCK_SENSOR.value).inc()
            self._quality_alert(d, r, AlertKind.STUCK_SENSOR, name, stuck, value,
                                f"{name} flat at {value:g} for {a.stuck_after} readings")
            recent = d.recent.setdefault(name, deque(maxlen=a.drift_window))
            recent.append(value)
            if len(recent) == a.drift_window and rng.std > 0:
                z = abs(float(np.mean(recent)) - rng.mean) / rng.std
                drift = z > a.drift_sigma
                if drift:
                    self.metrics.quality.labels(AlertKind.DRIFT.value).inc()
                self._quality_alert(d, r, AlertKind.DRIFT, name, drift, value,
                                    f"{name} mean of the last {a.drift_window} readings is "
                                    f"{z:.1f} training std from the training mean",
                                    score=z)

    def _quality_alert(self, d: _Device, r: Reading, kind: AlertKind, name: str, bad: bool,
                       value: float, message: str, score: float | None = None) -> None:
        state = self.debounce.observe(d.site, d.device, kind, name,
                                      Verdict.BAD if bad else Verdict.GOOD, r.ts)
        if state is not None:
            self._alert(d, r, kind, state, name, value=value, score=score,
                        message=message if state is AlertState.RAISED
                        else f"{name} {kind.value} cleared")

    def _alert(
        self, d: _Device, r: Reading, kind: AlertKind, state: AlertState, field_name: str | None,
        *, value: float | None = None, expected: float | None = None,
        score: float | None = None, model: LoadedModel | None = None, message: str = "",
        severity: Severity = Severity.WARNING,
    ) -> None:
        def finite(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        alert = Alert(
            id=f"{d.device}:{kind.value}:{field_name or '-'}:"
               f"{self.debounce.raised_since(d.site, d.device, kind, field_name or '') or r.ts}",
            device=d.device, site=d.site, kind=kind, state=state, severity=severity, ts=r.ts,
            field=field_name, value=finite(value), expected=finite(expected),
            score=finite(score), model=model.name if model else None,
            model_version=model.version if model else None, message=message[:1000],
        )
        if state is AlertState.RAISED:
            self.metrics.alerts.labels(kind.value).inc()
        for k in AlertKind:
            self.metrics.alerts_active.labels(k.value).set(self.debounce.active().get(k, 0))
        self.alerts_published.append(alert)
        del self.alerts_published[:-1000]
        self._publish(topics.alert(d.site, d.device), alert.to_json())
        log.info("alert %s %s on %s/%s: %s", kind.value, state.value, d.site, d.device, message)
        if self._forward_alert is not None:
            self._forward_alert(alert, list(d.rows))
