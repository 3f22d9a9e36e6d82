"""Spectral features of accelerometer windows, computed the same way in training and at the edge.

In the spirit of Edge Impulse's spectral-analysis block: per channel (each axis, plus the
magnitude of the acceleration vector, which is what collapses during a free fall) a
low-pass filter, time-domain statistics (mean, RMS, min, max, skewness, kurtosis), FFT
band log-energies and the strongest spectral peaks.

numpy only: the inference service on a Pi imports this module, TensorFlow never.
The parameters travel in the model card's ``pipeline_params`` so the edge cannot drift
from what the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Keys of a card's ``pipeline_params`` that belong to the pipeline, not to this block.
PIPELINE_KEYS = frozenset({"output"})
#: Time-domain statistics per channel, in this order.
STATS = ("mean", "rms", "min", "max", "skew", "kurtosis")


class FeatureError(ValueError):
    """A window that does not fit the spectral block's parameters."""


@dataclass(frozen=True)
class SpectralParams:
    sample_rate_hz: float = 62.5
    axes: tuple[str, ...] = ("accX", "accY", "accZ")
    #: Add |a| as a channel: free fall shows as the magnitude dropping towards 0.
    add_magnitude: bool = True
    #: Second-order Butterworth low-pass cut-off; None disables the filter.
    lowpass_hz: float | None = 20.0
    fft_length: int = 64
    #: Frequency bands (Hz) whose log-energy becomes a feature.
    bands: tuple[tuple[float, float], ...] = (
        (0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 31.25),
    )
    #: Strongest spectral peaks reported per channel (frequency and height).
    n_peaks: int = 2
    #: Samples per window the model was trained on.
    window: int = 62

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise FeatureError("sample_rate_hz must be positive")
        if not self.axes:
            raise FeatureError("at least one axis is needed")
        if self.fft_length < 4 or self.fft_length & (self.fft_length - 1):
            raise FeatureError("fft_length must be a power of two >= 4")
        nyquist = self.sample_rate_hz / 2
        if self.lowpass_hz is not None and not 0 < self.lowpass_hz < nyquist:
            raise FeatureError(f"lowpass_hz must be in (0, {nyquist})")
        for lo, hi in self.bands:
            if not 0 <= lo < hi <= nyquist + 1e-9:
                raise FeatureError(f"band ({lo}, {hi}) must lie in [0, {nyquist}]")
        if self.window < 2:
            raise FeatureError("window must be at least 2 samples")

    @property
    def channels(self) -> tuple[str, ...]:
        return (*self.axes, "magnitude") if self.add_magnitude else self.axes

    def feature_names(self) -> list[str]:
        per = [*STATS, *(f"band_{lo:g}_{hi:g}hz" for lo, hi in self.bands)]
        per += [f"peak{i + 1}_{kind}" for i in range(self.n_peaks) for kind in ("hz", "height")]
        return [f"{ch}.{name}" for ch in self.channels for name in per]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["axes"] = list(self.axes)
        out["bands"] = [list(b) for b in self.bands]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectralParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = set(data) - set(known) - PIPELINE_KEYS
        if unknown:
            raise FeatureError(f"unknown spectral parameters: {sorted(unknown)}")
        if "axes" in known:
            known["axes"] = tuple(known["axes"])
        if "bands" in known:
            known["bands"] = tuple((float(lo), float(hi)) for lo, hi in known["bands"])
        return cls(**known)


def _lowpass(x: FloatArray, cutoff_hz: float, rate_hz: float) -> FloatArray:
    """Second-order Butterworth (RBJ biquad) along axis 1 of (batch, time, channels).

    The filter state starts at the first sample so a window does not begin with a step
    transient (an idle phone reads 9.8 m/s^2 on one axis from the first sample).
    """
    w0 = 2 * math.pi * cutoff_hz / rate_hz
    alpha = math.sin(w0) / (2 * (1 / math.sqrt(2)))
    cos = math.cos(w0)
    a0 = 1 + alpha
    b0 = b2 = (1 - cos) / 2 / a0
    b1 = (1 - cos) / a0
    a1 = -2 * cos / a0
    a2 = (1 - alpha) / a0
    y = np.empty_like(x)
    x1 = x2 = y1 = y2 = x[:, 0, :]
    for t in range(x.shape[1]):
        xt = x[:, t, :]
        yt = b0 * xt + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        y[:, t, :] = yt
        x2, x1, y2, y1 = x1, xt, y1, yt
    return y


def _peaks(power: FloatArray, freqs: FloatArray, n: int) -> FloatArray:
    """Frequencies and heights of the ``n`` largest local maxima, (batch, ch, 2n)."""
    inner = power[..., 1:-1]
    is_peak = (inner > power[..., :-2]) & (inner >= power[..., 2:])
    heights = np.where(is_peak, inner, -np.inf)
    order = np.argsort(-heights, axis=-1)[..., :n]
    top_h = np.take_along_axis(heights, order, axis=-1)
    top_f = freqs[1:-1][order]
    found = np.isfinite(top_h)
    top_h = np.where(found, np.log1p(np.maximum(top_h, 0.0)), 0.0)
    top_f = np.where(found, top_f, 0.0)
    out = np.empty((*power.shape[:-1], 2 * n))
    out[..., 0::2] = top_f
    out[..., 1::2] = top_h
    return out


def spectral_features(windows: npt.ArrayLike, params: SpectralParams | Mapping[str, Any]) -> (
    npt.NDArray[np.float32]
):
    """Features of one window ``(time, axes)`` or a batch ``(batch, time, axes)``.

    Returns ``(n_features,)`` or ``(batch, n_features)`` float32, in the order of
    :meth:`SpectralParams.feature_names`.
    """
    p = params if isinstance(params, SpectralParams) else SpectralParams.from_dict(params)
    x = np.asarray(windows, dtype=np.float64)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3:
        raise FeatureError(f"expected (time, axes) or (batch, time, axes), got shape {x.shape}")
    if x.shape[2] != len(p.axes):
        raise FeatureError(f"expected {len(p.axes)} axes {list(p.axes)}, got {x.shape[2]}")
    if x.shape[1] != p.window:
        raise FeatureError(f"expected windows of {p.window} samples, got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise FeatureError("window contains NaN or infinite values")
    if p.add_magnitude:
        x = np.concatenate([x, np.linalg.norm(x, axis=2, keepdims=True)], axis=2)
    if p.lowpass_hz is not None:
        x = _lowpass(x, p.lowpass_hz, p.sample_rate_hz)

    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    rms = np.sqrt((centred**2).mean(axis=1))
    safe = np.where(rms > 1e-9, rms, 1.0)
    skew = np.where(rms > 1e-9, (centred**3).mean(axis=1) / safe**3, 0.0)
    kurt = np.where(rms > 1e-9, (centred**4).mean(axis=1) / safe**4 - 3.0, 0.0)
    stats = np.stack([mean, rms, x.min(axis=1), x.max(axis=1), skew, kurt], axis=-1)

    n_fft = p.fft_length
    frame = centred[:, :n_fft, :] if centred.shape[1] >= n_fft else np.pad(
        centred, ((0, 0), (0, n_fft - centred.shape[1]), (0, 0))
    )
    hann = np.hanning(n_fft)[None, :, None]
    power = np.abs(np.fft.rfft(frame * hann, axis=1)) ** 2 / n_fft  # (batch, freq, ch)
    power = np.moveaxis(power, 1, 2)  # (batch, ch, freq)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / p.sample_rate_hz)
    bands = []
    for lo, hi in p.bands:
        mask = (freqs >= lo) & (freqs < hi) if hi < freqs[-1] else (freqs >= lo)
        bands.append(np.log1p(power[..., mask].sum(axis=-1)))
    band_arr = np.stack(bands, axis=-1)  # (batch, ch, bands)
    parts = [stats, band_arr]
    if p.n_peaks:
        parts.append(_peaks(power, freqs, p.n_peaks))
    feats = np.concatenate(parts, axis=-1).reshape(x.shape[0], -1).astype(np.float32)
    out: npt.NDArray[np.float32] = feats[0] if single else feats
    return out


def feature_count(params: SpectralParams) -> int:
    return len(params.feature_names())
