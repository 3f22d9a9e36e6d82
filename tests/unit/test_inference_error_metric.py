"""The live forecast-error histograms, fed through the real stream and a real forecaster
(the tiny model on the numpy runtime); publishing goes to a list."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.contract.models import Reading
from services.inference import pipeline
from services.inference.config import AlertSettings, StreamSettings
from services.inference.loader import load
from services.inference.metrics import InferenceMetrics
from services.inference.models import LoadedModel, ModelSet
from services.inference.runtimes import RuntimeKind
from services.inference.stream import StreamProcessor
from services.modelkit.bundle import Bundle
from tests.support import tiny_models as tm

T0 = 1_760_000_000_000_000_000
LABELS = {"model": tm.FORECAST, "field": "temp"}


@pytest.fixture(scope="module")
def models() -> ModelSet:
    tiny = tm.build()
    ms = ModelSet()
    ms.swap(load(Bundle(tiny.card(tm.FORECAST), tiny.files(tm.FORECAST)), "s", 1,
                 [RuntimeKind.NUMPY]))
    return ms


def temp(i: int) -> float:
    return 22.0 + 3.0 * math.sin(i / 25.0)


def forecast(m: LoadedModel, window: list[float]) -> float:
    return float(np.ravel(m.predict_raw([pipeline.window_input(
        m.card, [[v] for v in window])]))[0])


class Stream:
    def __init__(self, models: ModelSet) -> None:
        self.registry = CollectorRegistry()
        self.sp = StreamProcessor(
            # A loose rule: no reading here is judged bad, so the stream's window is the
            # raw readings and the forecasts can be recomputed from them.
            StreamSettings(alerts=AlertSettings(relative=0.5)), models,
            InferenceMetrics(self.registry), lambda topic, payload: None,
            clock=lambda: T0 / 1e9)
        self.n = 0

    def feed(self, values: list[float], device: str = "d") -> None:
        for v in values:
            self.sp.process(Reading(device=device, site="s", ts=T0 + self.n * 10**9,
                                    seq=self.n, values={"temp": v}))
            self.n += 1

    def sample(self, name: str, **extra: str) -> float:
        return self.registry.get_sample_value(name, {**LABELS, **extra}) or 0.0


def test_each_forecast_observes_its_absolute_and_relative_error(models: ModelSet) -> None:
    m = models.get(tm.FORECAST)
    w = m.card.input.window
    values = [temp(i) for i in range(60)]
    s = Stream(models)
    s.feed(values)
    # The first `window` readings only fill the window: no forecast, nothing observed.
    errors = [abs(values[i] - forecast(m, values[i - w:i])) for i in range(w, len(values))]
    relative = [abs(values[i] - f) / abs(f) for i in range(w, len(values))
                for f in [forecast(m, values[i - w:i])]]
    assert s.sample("edgeloop_forecast_abs_error_count") == len(values) - w
    assert s.sample("edgeloop_forecast_abs_error_sum") == pytest.approx(sum(errors), rel=1e-6)
    assert s.sample("edgeloop_forecast_relative_error_count") == len(values) - w
    assert s.sample("edgeloop_forecast_relative_error_sum") == pytest.approx(
        sum(relative), rel=1e-6)
    # A second device adds to the same series: the histogram has no device label.
    s.feed(values[: w + 5], device="other")
    assert s.sample("edgeloop_forecast_abs_error_count") == len(values) - w + 5


def test_a_spike_lands_in_the_high_buckets(models: ModelSet) -> None:
    m = models.get(tm.FORECAST)
    w = m.card.input.window
    values = [temp(i) for i in range(40)]
    s = Stream(models)
    s.feed(values)
    before = {le: s.sample("edgeloop_forecast_abs_error_bucket", le=le)
              for le in ("2.5", "10.0", "+Inf")}
    total = s.sample("edgeloop_forecast_abs_error_sum")
    expected = forecast(m, values[-w:])
    spike = expected + 6.0
    s.feed([spike])
    assert s.sample("edgeloop_forecast_abs_error_sum") - total == pytest.approx(6.0, abs=1e-6)
    assert s.sample("edgeloop_forecast_abs_error_bucket", le="2.5") == before["2.5"]
    assert s.sample("edgeloop_forecast_abs_error_bucket", le="10.0") == before["10.0"] + 1
    assert s.sample("edgeloop_forecast_abs_error_bucket", le="+Inf") == before["+Inf"] + 1


def test_readings_without_the_target_field_observe_nothing(models: ModelSet) -> None:
    s = Stream(models)
    for i in range(30):
        s.sp.process(Reading(device="d", site="s", ts=T0 + i * 10**9, seq=i,
                             values={"humidity": 45.0}))
    assert s.sample("edgeloop_forecast_abs_error_count") == 0
