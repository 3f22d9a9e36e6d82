"""Train the small int8 next-temperature forecaster the firmware ships as its factory model.

Run in its own process (it imports TensorFlow): ``python firmware/tools/train_forecaster.py
OUT_DIR [--seed N] [--epochs N]``. It writes ``model.tflite`` (full int8, int8 input and
output), ``model_float.tflite`` and ``meta.json`` (normalisation, window, residual
statistics). Dense(12, relu) -> Dense(8, relu) -> Dense(1) on windows of 10 temperatures
from the Arm AIoT workshop CSV, like the workshop's own model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

WINDOW = 10
REPO = Path(__file__).resolve().parents[2]
CSV = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"


def load_temps(path: Path) -> np.ndarray:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["temp"]) for r in rows], dtype=np.float32)


def windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(series) - window)[:, None] + np.arange(window)[None, :]
    return series[idx], series[window:]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--units", type=int, nargs=2, default=[12, 8])
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    temps = load_temps(CSV)
    mean, std = float(temps.mean()), float(temps.std())
    x, y = windows((temps - mean) / std, WINDOW)
    split = int(len(x) * 0.8)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(WINDOW,)),
        tf.keras.layers.Dense(args.units[0], activation="relu"),
        tf.keras.layers.Dense(args.units[1], activation="relu"),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x[:split], y[:split], epochs=args.epochs, batch_size=64, verbose=0)
    pred = model.predict(x[split:], verbose=0)[:, 0]
    residual = (pred - y[split:]) * std
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()

    def representative():
        for row in x[:: max(1, len(x) // 300)]:
            yield [row[None, :].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_model = conv.convert()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.tflite").write_bytes(int8_model)
    (args.out / "model_float.tflite").write_bytes(float_model)
    meta = {
        "window": WINDOW, "fields": ["temp"], "target": "temp",
        "mean": mean, "std": std, "seed": args.seed,
        "mae": float(np.abs(residual).mean()), "residual_std": float(residual.std()),
        "sample_windows": (x[split: split + 16] * std + mean).tolist(),
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
