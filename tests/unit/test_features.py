"""The numpy-only code both sides of the loop run: spectral features and preprocess."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from services.contract import InputSpec, ModelTask
from services.contract.card import ModelCard, Normalization, Pipeline
from services.modelkit.features import FeatureError, SpectralParams, spectral_features
from services.modelkit.preprocess import PreprocessError, finish, prepare, raw_sample_shape

RATE = 62.5
WINDOW = 62


def tone(freq_hz: float, amplitude: float = 1.0, offset: float = 0.0) -> (
    np.ndarray[Any, np.dtype[np.float64]]
):
    t = np.arange(WINDOW) / RATE
    axis = offset + amplitude * np.sin(2 * np.pi * freq_hz * t)
    return np.stack([axis, np.zeros(WINDOW), np.full(WINDOW, 9.81)], axis=1)


def test_feature_vector_matches_names_and_batch_equals_single() -> None:
    p = SpectralParams()
    one = spectral_features(tone(5.0), p)
    assert one.shape == (len(p.feature_names()),)
    assert one.dtype == np.float32
    batch = spectral_features(np.stack([tone(5.0), tone(12.0)]), p)
    assert batch.shape == (2, len(p.feature_names()))
    np.testing.assert_allclose(batch[0], one, rtol=1e-6)


def test_peak_and_band_follow_the_signal_frequency() -> None:
    p = SpectralParams(lowpass_hz=None)
    names = p.feature_names()
    for freq, band in ((3.0, "accX.band_2_4hz"), (10.0, "accX.band_8_16hz")):
        f = spectral_features(tone(freq, amplitude=2.0), p)
        peak = f[names.index("accX.peak1_hz")]
        assert abs(peak - freq) <= RATE / p.fft_length  # within one FFT bin
        bands = [n for n in names if n.startswith("accX.band_")]
        assert max(bands, key=lambda n: f[names.index(n)]) == band


def test_free_fall_shows_in_the_magnitude_channel() -> None:
    p = SpectralParams()
    names = p.feature_names()
    idle = np.tile([0.0, 0.0, 9.81], (WINDOW, 1))
    fall = idle.copy()
    fall[20:45] = [0.1, -0.2, 0.3]  # weightless for 0.4 s
    f_idle, f_fall = spectral_features(idle, p), spectral_features(fall, p)
    i = names.index("magnitude.min")
    assert f_idle[i] == pytest.approx(9.81, abs=1e-3)
    assert f_fall[i] < 3.0
    assert f_fall[names.index("magnitude.rms")] > f_idle[names.index("magnitude.rms")]


def test_lowpass_removes_a_tone_above_the_cut_off() -> None:
    high = tone(25.0, amplitude=3.0)
    rms = SpectralParams().feature_names().index("accX.rms")
    filtered = spectral_features(high, SpectralParams(lowpass_hz=5.0))[rms]
    unfiltered = spectral_features(high, SpectralParams(lowpass_hz=None))[rms]
    assert filtered < 0.3 * unfiltered


def test_bad_windows_and_params_are_refused() -> None:
    p = SpectralParams()
    with pytest.raises(FeatureError, match="axes"):
        spectral_features(np.zeros((WINDOW, 2)), p)
    with pytest.raises(FeatureError, match="samples"):
        spectral_features(np.zeros((WINDOW - 1, 3)), p)
    bad = tone(3.0)
    bad[4, 1] = np.nan
    with pytest.raises(FeatureError, match="NaN"):
        spectral_features(bad, p)
    with pytest.raises(FeatureError):
        SpectralParams(fft_length=60)
    with pytest.raises(FeatureError):
        SpectralParams(lowpass_hz=40.0)
    with pytest.raises(FeatureError, match="unknown"):
        SpectralParams.from_dict({"sample_rate_hz": 62.5, "colour": "red"})


def test_params_round_trip_through_a_card_dict() -> None:
    p = SpectralParams(sample_rate_hz=50.0, window=50, fft_length=64, bands=((1.0, 5.0),))
    again = SpectralParams.from_dict({**p.to_dict(), "output": "logits"})
    assert again == p


def _card(pipeline: Pipeline, fields: list[str], window: int, shape: list[int],
          **kw: object) -> ModelCard:
    return ModelCard(name="m", task=ModelTask.FORECAST, created=1,
                     input=InputSpec(fields=fields, window=window, shape=shape),
                     pipeline=pipeline, output_shape=[1, 1], **kw)  # type: ignore[arg-type]


def test_window_pipeline_single_and_multi_field() -> None:
    card = _card(Pipeline.WINDOW, ["temp"], 3, [1, 3],
                 normalization=Normalization(input_mean=[20.0], input_std=[0.5],
                                             output_mean=[20.0], output_std=[0.5]))
    x = prepare(card, [20.0, 20.5, 21.0])
    np.testing.assert_allclose(x, [[0.0, 1.0, 2.0]])
    assert x.dtype == np.float32
    batch = prepare(card, [[20.0, 20.5, 21.0], [19.5, 19.5, 19.5]])
    assert batch.shape == (2, 3)
    np.testing.assert_allclose(finish(card, [[2.0]]), [[21.0]])
    multi = _card(Pipeline.WINDOW, ["temp", "humidity"], 2, [1, 2, 2],
                  normalization=Normalization(input_mean=[20.0, 50.0], input_std=[1.0, 10.0]))
    np.testing.assert_allclose(prepare(multi, [[21.0, 60.0], [19.0, 40.0]]),
                               [[[1.0, 1.0], [-1.0, -1.0]]])
    assert raw_sample_shape(multi) == (2, 2)


def test_columns_and_spectral_pipelines() -> None:
    cols = _card(Pipeline.COLUMNS, ["a", "b"], 1, [1, 2],
                 normalization=Normalization(input_mean=[1.0, 2.0], input_std=[2.0, 4.0]))
    np.testing.assert_allclose(prepare(cols, [3.0, 6.0]), [[1.0, 1.0]])
    p = SpectralParams()
    n = len(p.feature_names())
    spec = _card(Pipeline.SPECTRAL, list(p.axes), WINDOW, [1, n],
                 pipeline_params={**p.to_dict(), "output": "logits"},
                 normalization=Normalization(input_mean=[0.0] * n, input_std=[1.0] * n))
    x = prepare(spec, tone(4.0))
    np.testing.assert_allclose(x[0], spectral_features(tone(4.0), p), rtol=1e-6)
    probs = finish(spec, [[2.0, 0.0, -1.0]])
    assert probs.sum() == pytest.approx(1.0)
    assert probs.argmax() == 0


def test_prepare_refuses_wrong_shapes_and_nan() -> None:
    card = _card(Pipeline.WINDOW, ["temp"], 3, [1, 3])
    with pytest.raises(PreprocessError, match="shape"):
        prepare(card, [1.0, 2.0])
    with pytest.raises(PreprocessError, match="NaN"):
        prepare(card, [1.0, float("nan"), 2.0])
    with pytest.raises(PreprocessError, match="numeric"):
        prepare(card, ["a", "b", "c"])
    with pytest.raises(PreprocessError, match="empty"):
        prepare(card, np.zeros((0, 3)))


def test_modules_never_import_tensorflow() -> None:
    code = ("import sys, services.modelkit.preprocess, services.modelkit.features; "
            "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras') "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
