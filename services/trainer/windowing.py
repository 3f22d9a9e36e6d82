"""Windows and splits that never leak the future (or a recording) into training.

Forecasting: look-back windows inside one gap-free segment, ordered by the time of the
value they predict, split in time order. Classification: fixed windows with a stride
inside each recording, split by recording (every window of a recording on one side).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.trainer.datasets import Recordings, Series
from services.trainer.errors import DataError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LookBack:
    x: FloatArray  # (n, window, n_fields), oldest first
    y: FloatArray  # (n,) the target `horizon` steps after the window's last sample
    last: FloatArray  # (n,) the target's last value in the window (persistence)
    t: FloatArray  # (n,) time of the predicted value (s)
    fields: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: IntArray | slice) -> LookBack:
        return LookBack(self.x[idx], self.y[idx], self.last[idx], self.t[idx], self.fields)


def lookback_windows(
    series: Series, fields: Sequence[str], target: str, window: int, horizon: int
) -> LookBack:
    span = window + horizon
    longest = max(len(s) for s in series.segments)
    if longest < span:
        raise DataError(
            f"a window of {window} plus horizon {horizon} is longer than the data: the "
            f"longest gap-free stretch has {longest} samples"
        )
    xs, ys, lasts, ts = [], [], [], []
    for seg in series.segments:
        n = len(seg) - span + 1
        if n <= 0:
            continue
        stack = np.stack([seg.values[f] for f in fields], axis=1)  # (len, n_fields)
        idx = np.arange(n)[:, None] + np.arange(window)[None, :]
        xs.append(stack[idx])
        tgt = seg.values[target]
        ys.append(tgt[np.arange(n) + span - 1])
        lasts.append(tgt[np.arange(n) + window - 1])
        ts.append(seg.ts[np.arange(n) + span - 1])
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")
    return LookBack(np.concatenate(xs)[order], np.concatenate(ys)[order],
                    np.concatenate(lasts)[order], t[order], list(fields))


@dataclass(frozen=True)
class TimeSplit:
    train: IntArray
    val: IntArray
    test: IntArray


def time_split(n: int, test_fraction: float, val_fraction: float, minimum: int = 20) -> TimeSplit:
    """Oldest → train, then validation (the end of the training part), newest → test."""
    n_test = round(n * test_fraction)
    n_fit = n - n_test
    n_val = round(n_fit * val_fraction)
    if n_test < minimum or n_fit - n_val < minimum or n_val < 1:
        raise DataError(
            f"too little data: {n} windows give {n_fit - n_val} train / {n_val} validation / "
            f"{n_test} test; need at least {minimum} in train and test"
        )
    idx = np.arange(n, dtype=np.int64)
    return TimeSplit(idx[: n_fit - n_val], idx[n_fit - n_val: n_fit], idx[n_fit:])


@dataclass(frozen=True)
class Windows:
    x: FloatArray  # (n, window, axes)
    label: IntArray  # (n,) index into labels
    group: IntArray  # (n,) recording index
    labels: list[str]
    names: list[str]  # recording names, by group index
    #: Recordings shorter than one window (left out).
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.label.shape[0])


def fixed_windows(data: Recordings, window: int, stride: int) -> Windows:
    labels = sorted({r.label for r in data.recordings})
    xs, ys, gs = [], [], []
    skipped = 0
    for g, rec in enumerate(data.recordings):
        n = (rec.values.shape[0] - window) // stride + 1
        if n <= 0:
            skipped += 1
            continue
        idx = (np.arange(n) * stride)[:, None] + np.arange(window)[None, :]
        xs.append(rec.values[idx])
        ys.append(np.full(n, labels.index(rec.label), dtype=np.int64))
        gs.append(np.full(n, g, dtype=np.int64))
    if skipped:
        log.info("%d recording(s) shorter than the %d-sample window were left out", skipped,
                 window)
    if not xs:
        longest = max(r.values.shape[0] for r in data.recordings)
        raise DataError(f"a window of {window} samples is longer than every recording "
                        f"(longest: {longest})")
    w = Windows(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), labels,
                [r.name for r in data.recordings], skipped)
    present = sorted({labels[i] for i in np.unique(w.label)})
    if len(present) < 2:
        raise DataError(f"classification needs at least two classes; the data has {present}")
    return w


def grouped_folds(w: Windows, k: int, seed: int) -> IntArray:
    """A fold number per recording, stratified by label: recordings never straddle folds."""
    rng = np.random.default_rng(seed)
    groups = np.unique(w.group)
    fold_of = np.full(int(w.group.max()) + 1, -1, dtype=np.int64)
    label_of = {int(g): int(w.label[np.argmax(w.group == g)]) for g in groups}
    offset = 0
    for lab in range(len(w.labels)):
        members = np.array([g for g in groups if label_of[int(g)] == lab], dtype=np.int64)
        rng.shuffle(members)
        for i, g in enumerate(members):
            fold_of[g] = (i + offset) % k
        offset += len(members)
    return fold_of


def grouped_split(w: Windows, test_fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """Train/test window indices with every recording on one side, stratified by label."""
    k = max(2, round(1 / test_fraction))
    fold_of = grouped_folds(w, k, seed)
    is_test = fold_of[w.group] == 0
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(np.unique(w.label[train])) < 2 or test.size == 0:
        raise DataError("too few recordings to hold out a test set with every class")
    return train.astype(np.int64), test.astype(np.int64)
