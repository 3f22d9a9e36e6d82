"""Small int8 forecasters for firmware development and tests, trained here.

TensorFlow runs in a child process (``firmware/tools/train_forecaster.py``), never in the
caller's, and results are cached under ``firmware/build/models/<name>``. The cards follow
the trainer's conventions (window pipeline, per-field normalisation, forecast task), so
the same C export and device update paths serve these and the trainer's real bundles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.contract.card import ModelCard, Normalization, Pipeline, TestVector
from services.contract.models import InputSpec, ModelTask
from services.device.emulator import BUILD, FIRMWARE
from services.trainer.c_export import CExport, export_c

TRAIN_SCRIPT = FIRMWARE / "tools" / "train_forecaster.py"


@dataclass(frozen=True)
class DevModel:
    name: str
    directory: Path
    tflite: bytes
    float_tflite: bytes
    card: ModelCard
    meta: dict[str, Any]

    def export(self, out_dir: Path | None = None, symbol: str = "edgeloop_model",
               **kwargs: Any) -> CExport:
        return export_c(self.tflite, self.card, out_dir or self.directory / "c", symbol,
                        **kwargs)


def train(name: str, *, seed: int = 7, epochs: int = 4, units: tuple[int, int] = (12, 8),
          root: Path | None = None, timeout_s: float = 300.0) -> DevModel:
    """Train (or load from the cache) a Dense(u0,relu)->Dense(u1,relu)->Dense(1) forecaster
    on windows of 10 temperatures from the workshop CSV; full int8 I/O."""
    directory = (root or BUILD / "models") / name
    if not (directory / "meta.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(TRAIN_SCRIPT), str(directory), "--seed", str(seed),
               "--epochs", str(epochs), "--units", str(units[0]), str(units[1])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"training {name} failed:\n{proc.stderr[-3000:]}")
    return load(name, directory)


def load(name: str, directory: Path) -> DevModel:
    meta = json.loads((directory / "meta.json").read_text())
    card = ModelCard(
        name=name, version=1, task=ModelTask.FORECAST, created=time.time_ns(),
        description="next-temperature forecaster on windows of 10 (firmware dev model)",
        input=InputSpec(fields=["temp"], window=meta["window"], shape=[1, meta["window"]],
                        dtype="int8", target="temp", interval_s=3.0),
        pipeline=Pipeline.WINDOW, output_shape=[1, 1],
        normalization=Normalization(input_mean=[meta["mean"]], input_std=[meta["std"]],
                                    output_mean=[meta["mean"]], output_std=[meta["std"]]),
        metrics={"mae": meta["mae"], "residual_std": meta["residual_std"]},
        test_vectors=[TestVector(input=w, output=[0.0]) for w in meta["sample_windows"][:3]],
        model_file="model.tflite",
    )
    return DevModel(name, directory, (directory / "model.tflite").read_bytes(),
                    (directory / "model_float.tflite").read_bytes(), card, meta)


def trainer_bundle(name: str, *, fields: tuple[str, ...] = ("temp",), model: str = "mlp",
                   epochs: int = 1, root: Path | None = None,
                   timeout_s: float = 900.0) -> Path:
    """A bundle made by the real trainer (``edgeloop train``, its own process), cached."""
    out = (root or BUILD / "models" / "trainer") / name
    bundle = out / name / f"{name}.bundle.tar"
    if bundle.exists():
        return bundle
    csv = FIRMWARE.parent / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
    cmd = [sys.executable, "-m", "services.trainer", "--task", "forecast",
           "--source", f"csv:{csv}", "--target", "temp", "--fields", ",".join(fields),
           "--window", "10", "--epochs", str(epochs), "--model", model,
           "--out", str(out), "--name", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          check=False, cwd=FIRMWARE.parent)
    if proc.returncode != 0 or not bundle.exists():
        raise RuntimeError(f"edgeloop train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return bundle
