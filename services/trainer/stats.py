"""Normalisation statistics and per-field training ranges, saved in the model card."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.contract.card import FieldRange
from services.trainer.errors import DataError

FloatArray = npt.NDArray[np.float64]


def field_range(values: FloatArray) -> FieldRange:
    v = np.asarray(values, dtype=np.float64).ravel()
    steps = np.abs(np.diff(v))
    steps = steps[steps > 1e-9]
    return FieldRange(
        min=float(v.min()), max=float(v.max()), mean=float(v.mean()), std=float(v.std()),
        p01=float(np.percentile(v, 1)), p99=float(np.percentile(v, 99)),
        step=float(steps.min()) if steps.size else None,
    )


def mean_std(x: FloatArray, axis: int | tuple[int, ...], what: str) -> tuple[
    list[float], list[float]
]:
    """Per-feature mean and std; a constant feature keeps std 1 (it carries no signal)."""
    mean = np.asarray(x.mean(axis=axis), dtype=np.float64).ravel()
    std = np.asarray(x.std(axis=axis), dtype=np.float64).ravel()
    if not np.isfinite(mean).all() or not np.isfinite(std).all():
        raise DataError(f"{what}: non-finite statistics")
    std = np.where(std > 1e-9, std, 1.0)
    return mean.tolist(), std.tolist()


def require_variation(values: FloatArray, name: str) -> None:
    if float(np.ptp(values)) <= 1e-12:
        raise DataError(f"{name} is constant over the training range: nothing to learn")
