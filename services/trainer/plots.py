"""PNG plots for the report (matplotlib, Agg backend: no display on a build machine)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt


def training_curve(history: Mapping[str, list[float]], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "val_loss"):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def predictions(
    t: npt.NDArray[np.float64], truth: npt.NDArray[np.float64],
    preds: Mapping[str, npt.NDArray[np.float64]], path: Path, title: str, unit: str,
    limit: int = 600,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = (t[:limit] - t[0]) / 3600 if t.size else t
    ax.plot(x, truth[:limit], label="truth", color="black", linewidth=1.2)
    for name, p in preds.items():
        ax.plot(x, p[:limit], label=name, linewidth=0.9, alpha=0.8)
    ax.set_xlabel("hours into the test split")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def scatter(truth: npt.NDArray[np.float64], pred: npt.NDArray[np.float64], path: Path,
            title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(truth, pred, s=3, alpha=0.4)
    lo, hi = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    ax.set_xlabel("truth")
    ax.set_ylabel("prediction")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
