"""Raw client inputs → model tensors → final outputs, through the card's pipeline.

The numpy-only code that does it lives in ``services.modelkit.preprocess`` (and
``features`` for spectral pipelines), shared with the trainer so both sides of the loop
transform data identically. This module is the inference service's one door to it, and
adds what only serving needs: turning a device's live window into a raw input, and
checking what clients send before it reaches the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard, Pipeline
from services.modelkit import preprocess


class InputError(ValueError):
    """A raw input that does not fit the model's pipeline (shape, type, values)."""


def prepare(card: ModelCard, raws: Sequence[Any]) -> npt.NDArray[np.float32]:
    """A batch of raw inputs (as clients send them) → the model's float32 input batch."""
    try:
        x = preprocess.prepare(card, list(raws))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InputError(str(exc)[:300]) from None
    # preprocess refuses non-finite raw inputs itself; no second pass over the batch here.
    return x if x.dtype == np.float32 else np.asarray(x, dtype=np.float32)


def finish(card: ModelCard, y: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The model's raw output batch → final outputs (de-normalised values, probabilities)."""
    return preprocess.finish(card, y)


def window_input(card: ModelCard, rows: Sequence[Sequence[float]]) -> Any:
    """A device's last ``window`` readings (rows of the card's fields, oldest first) as the
    raw input a client would send for the same window."""
    if card.pipeline is Pipeline.COLUMNS:
        return list(rows[-1])
    if len(card.input.fields) == 1:
        return [r[0] for r in rows]
    return [list(r) for r in rows]
