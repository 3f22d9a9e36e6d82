"""Held-out metrics (numpy only): regression errors and classification scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def regression(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    t = np.asarray(y_true, np.float64).ravel()
    p = np.asarray(y_pred, np.float64).ravel()
    err = p - t
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
            "n": int(t.size)}


def classification(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: list[str]) -> (
    dict[str, Any]
):
    t = np.asarray(y_true, np.int64).ravel()
    p = np.asarray(y_pred, np.int64).ravel()
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    per: dict[str, dict[str, float]] = {}
    for i, name in enumerate(labels):
        tp = float(cm[i, i])
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[name] = {"precision": prec, "recall": rec, "f1": f1, "support": int(cm[i, :].sum())}
    return {"accuracy": float((t == p).mean()) if t.size else 0.0, "per_class": per,
            "confusion": cm.tolist(), "labels": labels, "n": int(t.size)}
