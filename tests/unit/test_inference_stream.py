"""Stream rules without a broker: drift, out of range, k-sigma, summaries and the
forwarder's byte accounting (publishing goes to a list)."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry

from services.contract.models import Reading
from services.inference.config import AlertSettings, ForwardSettings, StreamSettings
from services.inference.forward import Forwarder
from services.inference.loader import load
from services.inference.metrics import InferenceMetrics
from services.inference.models import ModelSet
from services.inference.runtimes import RuntimeKind
from services.inference.stream import StreamProcessor
from services.modelkit.bundle import Bundle
from tests.support import tiny_models as tm

T0 = 1_760_000_000_000_000_000


@pytest.fixture(scope="module")
def models() -> ModelSet:
    tiny = tm.build()
    ms = ModelSet()
    ms.swap(load(Bundle(tiny.card(tm.FORECAST), tiny.files(tm.FORECAST)), "s", 1,
                 [RuntimeKind.NUMPY]))
    return ms


def run(models: ModelSet, values: list[float], alerts: AlertSettings,
        forward: bool = False) -> tuple[list[tuple[str, dict[str, object]]], CollectorRegistry,
                                        Forwarder | None]:
    registry = CollectorRegistry()
    metrics = InferenceMetrics(registry)
    sent: list[tuple[str, dict[str, object]]] = []

    def publish(topic: str, payload: bytes) -> None:
        sent.append((topic, json.loads(payload)))

    fwd = Forwarder(ForwardSettings(enabled=True, context=3), metrics, publish) if forward \
        else None
    sp = StreamProcessor(StreamSettings(alerts=alerts), models, metrics, publish,
                         forward=fwd.on_reading if fwd else None,
                         forward_alert=fwd.on_alert if fwd else None,
                         clock=lambda: T0 / 1e9 + len(values))
    for i, v in enumerate(values):
        sp.process(Reading(device="d", site="s", ts=T0 + i * 10**9, seq=i,
                           values={"temp": v}), raw_bytes=100)
    return sent, registry, fwd


def kinds(sent: list[tuple[str, dict[str, object]]]) -> list[tuple[object, object]]:
    return [(m["kind"], m["state"]) for t, m in sent if t.endswith("/alert")]


def temp(i: int) -> float:
    return 22.0 + 3.0 * math.sin(i / 25.0)


def test_drift_is_raised_when_the_recent_mean_leaves_the_training_distribution(
    models: ModelSet,
) -> None:
    # A slow 0.2 °C/step climb: every forecast is close (no deviation alert) but the
    # level drifts far from what the model was trained on.
    values = [22.0 + 0.2 * i for i in range(120)]
    sent, registry, _ = run(models, values, AlertSettings(relative=0.5, drift_window=20,
                                                          drift_sigma=3.0))
    assert ("drift", "raised") in kinds(sent)
    assert ("out_of_range", "raised") in kinds(sent)
    assert not any(k == "forecast_deviation" for k, _ in kinds(sent))
    assert (registry.get_sample_value("edgeloop_data_quality_issues_total",
                                      {"kind": "drift"}) or 0) > 0


def test_k_sigma_catches_a_small_step_the_relative_rule_misses(models: ModelSet) -> None:
    values = [temp(i) for i in range(150)]
    for i in range(100, 110):
        values[i] += 0.8  # ~3.5 %: under the 8 % relative threshold
    relative_only, _, _ = run(models, values, AlertSettings(relative=0.08))
    assert not any(k == "forecast_deviation" for k, _ in kinds(relative_only))
    with_sigma, _, _ = run(models, values, AlertSettings(relative=0.08, k_sigma=6.0,
                                                         error_window=50))
    assert [s for k, s in kinds(with_sigma) if k == "forecast_deviation"] == [
        "raised", "cleared"]


def test_forwarder_sends_alerts_with_context_and_summaries(models: ModelSet) -> None:
    values = [temp(i) for i in range(60)]
    for i in range(40, 45):
        values[i] *= 1.3
    sent, registry, fwd = run(models, values, AlertSettings(relative=0.05), forward=True)
    assert fwd is not None
    up = [(t, m) for t, m in sent if t.startswith("edgeloop/v1/upstream/s/d/")]
    context = [m for t, m in up if t.endswith("/telemetry")]
    assert context and all(len(m["samples"]) == 3 for m in context)  # type: ignore[arg-type]
    assert fwd.flush() == 1
    summary = sent[-1][1]
    assert sent[-1][0] == "edgeloop/v1/upstream/s/d/summary"
    fields = summary["fields"]
    assert isinstance(fields, dict) and fields["temp"]["count"] == 60
    assert fields["temp"]["max"] == pytest.approx(max(values))
    assert summary["anomalies"] >= 1  # type: ignore[operator]
    raw = registry.get_sample_value("edgeloop_forward_bytes_total", {"direction": "raw"})
    assert raw == 6000.0


def test_a_fast_classifier_sets_no_pace_for_a_slow_thermometer() -> None:
    # An accelerometer classifier sampled every 16 ms is loaded next to nothing else; a
    # thermometer reading every 3 s does not feed it, so its pace must not raise gaps.
    tiny = tm.build()
    card = tiny.card(tm.CLASSIFY)
    card = card.model_copy(update={"input": card.input.model_copy(update={"interval_s": 0.016})})
    ms = ModelSet()
    ms.swap(load(Bundle(card, tiny.files(tm.CLASSIFY)), "s", 1, [RuntimeKind.NUMPY]))
    registry = CollectorRegistry()
    sent: list[tuple[str, dict[str, object]]] = []
    sp = StreamProcessor(StreamSettings(), ms, InferenceMetrics(registry),
                         lambda t, p: sent.append((t, json.loads(p))), clock=lambda: T0 / 1e9)
    for i in range(20):
        sp.process(Reading(device="thermo", site="s", ts=T0 + i * 3 * 10**9, seq=i,
                           values={"temp": 21.0}), raw_bytes=60)
        sp.process(Reading(device="phone", site="s", ts=T0 + i * 16_000_000, seq=i,
                           values={"aX": 0.1, "aY": 0.2, "aZ": 9.8}), raw_bytes=60)
    # The phone that feeds the classifier keeps to 16 ms: no gap either; then it stalls.
    sp.process(Reading(device="phone", site="s", ts=T0 + 2 * 10**9, seq=20,
                       values={"aX": 0.1, "aY": 0.2, "aZ": 9.8}), raw_bytes=60)
    gaps = [(t, m["device"]) for t, m in sent if t.endswith("/alert") and m["kind"] == "gap"]
    assert gaps == [("edgeloop/v1/s/phone/alert", "phone")]


def test_out_of_range_clears_only_back_inside_the_training_range(models: ModelSet) -> None:
    rng = models.get(tm.FORECAST).card.training_ranges["temp"]
    span = rng.max - rng.min
    margin_band = rng.max + 0.05 * span  # beyond the range, inside its 10 % margin
    values = ([rng.mean] * 20 + [rng.max + 0.5 * span] * 10  # far out: raised
              + [margin_band] * 30                           # hovering at the margin
              + [rng.mean] * 20)                             # back inside: cleared
    sent, _, _ = run(models, values, AlertSettings(relative=10.0, range_margin=0.1,
                                                   raise_after=3, clear_after=5))
    states = [s for k, s in kinds(sent) if k == "out_of_range"]
    assert states == ["raised", "cleared"]
    cleared_at = next(i for i, (t, m) in enumerate(sent)
                      if t.endswith("/alert") and m["kind"] == "out_of_range"
                      and m["state"] == "cleared")
    assert sent[cleared_at][1]["ts"] >= T0 + 60 * 10**9  # not while hovering at the margin
