"""Raw client inputs → model input batch, and model outputs → final values.

One implementation for both sides of the loop: the trainer computes its test vectors with
it, the inference service runs it before every invoke. numpy only (no TensorFlow).

Raw inputs per pipeline (one sample; a batch adds a leading dimension):

- ``window``: the last ``window`` values of the card's fields, oldest first, shaped
  ``(window,)`` for one field or ``(window, n_fields)`` for several. Standardised per
  field with ``normalization.input_mean/std`` (one entry per field).
- ``columns``: one value per field ``(n_fields,)``, standardised per field.
- ``spectral``: an accelerometer window ``(window, n_axes)`` → spectral features
  (:mod:`services.modelkit.features`) → standardised per feature.

Outputs: de-standardised with ``normalization.output_mean/std`` when given; classifiers
whose ``pipeline_params["output"]`` is ``"logits"`` get a softmax (probabilities).

Int8 (de)quantisation is not done here: the runtime wrapper does it with the model's own
tensor parameters, so this module works for the float and the int8 model alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard, Pipeline
from services.modelkit.features import FeatureError, SpectralParams, spectral_features

F32 = npt.NDArray[np.float32]

#: ``pipeline_params[OUTPUT_KEY] == LOGITS``: the model outputs logits and :func:`finish`
#: turns them into probabilities (int8 softmax kernels are coarse and differ by runtime).
OUTPUT_KEY = "output"
LOGITS = "logits"


class PreprocessError(ValueError):
    """A raw input that does not fit the model card (shape, NaN, unknown pipeline)."""


def raw_sample_shape(card: ModelCard) -> tuple[int, ...]:
    """The shape of one raw input (what a client sends) for this card."""
    n_fields = len(card.input.fields)
    if card.pipeline is Pipeline.WINDOW:
        return (card.input.window,) if n_fields == 1 else (card.input.window, n_fields)
    if card.pipeline is Pipeline.COLUMNS:
        return (n_fields,)
    if card.pipeline is Pipeline.SPECTRAL:
        return (card.input.window, n_fields)
    raise PreprocessError(f"unknown pipeline {card.pipeline!r}")


def _as_batch(card: ModelCard, raw: Any) -> npt.NDArray[np.float64]:
    try:
        x = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PreprocessError(f"input is not numeric: {exc}") from None
    shape = raw_sample_shape(card)
    if x.shape == shape:
        x = x[None]
    elif x.shape[1:] != shape:
        raise PreprocessError(
            f"input shape {list(x.shape)} does not match {list(shape)} "
            f"(or a batch of them) for fields {card.input.fields}"
        )
    if x.shape[0] == 0:
        raise PreprocessError("empty batch")
    if not np.isfinite(x).all():
        raise PreprocessError("input contains NaN or infinite values")
    return x


def _standardise(x: npt.NDArray[np.float64], mean: list[float], std: list[float]) -> (
    npt.NDArray[np.float64]
):
    if not mean:
        return x
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if m.shape[0] != x.shape[-1] or s.shape != m.shape:
        raise PreprocessError(
            f"normalisation has {m.shape[0]} entries for {x.shape[-1]} features"
        )
    return (x - m) / s


def prepare(card: ModelCard, raw: Any) -> F32:
    """Raw input (one sample or a batch) → float32 batch shaped like the model's input."""
    x = _as_batch(card, raw)
    norm = card.normalization
    if card.pipeline is Pipeline.SPECTRAL:
        try:
            feats = spectral_features(x, SpectralParams.from_dict(card.pipeline_params))
        except FeatureError as exc:
            raise PreprocessError(str(exc)) from None
        x = feats.astype(np.float64)
        out = _standardise(x, norm.input_mean, norm.input_std)
    elif card.pipeline is Pipeline.WINDOW and x.ndim == 2:
        # One field: (batch, window); the per-field statistics apply to every step.
        out = _standardise(x[..., None], norm.input_mean, norm.input_std)[..., 0]
    else:
        out = _standardise(x, norm.input_mean, norm.input_std)
    target = (out.shape[0], *card.input.shape[1:])
    if math.prod(out.shape) != math.prod(target):
        raise PreprocessError(f"prepared input {list(out.shape)} cannot fit {card.input.shape}")
    return out.reshape(target).astype(np.float32)


def finish(card: ModelCard, y: Any) -> npt.NDArray[np.float64]:
    """Model output batch (dequantised float) → final values (°C, class probabilities...)."""
    out = np.asarray(y, dtype=np.float64)
    norm = card.normalization
    if norm.output_mean:
        m = np.asarray(norm.output_mean, dtype=np.float64)
        s = np.asarray(norm.output_std, dtype=np.float64)
        if out.shape[-1] != m.shape[0]:
            raise PreprocessError(
                f"output has {out.shape[-1]} values, normalisation has {m.shape[0]}"
            )
        out = out * s + m
    if card.pipeline_params.get(OUTPUT_KEY) == LOGITS:
        shifted = np.exp(out - out.max(axis=-1, keepdims=True))
        out = shifted / shifted.sum(axis=-1, keepdims=True)
    return out
