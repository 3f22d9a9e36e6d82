"""Run a model in LiteRT, tflite-runtime or TFLite Micro, each in a worker process."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.trainer.config import Runtime
from services.trainer.errors import TrainerError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
_ARENA = re.compile(rb"Arena allocation total (\d+) bytes")


class RuntimeFailure(TrainerError):
    """A runtime could not load or run the model."""


@dataclass(frozen=True)
class RuntimeOutput:
    runtime: Runtime
    raw: npt.NDArray[np.generic]
    values: npt.NDArray[np.float32]
    input_quant: tuple[float, int]
    output_quant: tuple[float, int]
    arena_bytes: int | None
    seconds: float


def run_model(runtime: Runtime, model: bytes, inputs: npt.NDArray[np.float32],
              timeout_s: float = 300.0) -> RuntimeOutput:
    if runtime is Runtime.TENSORFLOW:
        raise ValueError("TensorFlow runs in the training process, not in a worker")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeloop-rt-") as tmp:
        d = Path(tmp)
        (d / "model.tflite").write_bytes(model)
        np.save(d / "inputs.npy", np.asarray(inputs, np.float32))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "services.trainer.runtime_worker", runtime.value,
                str(d / "model.tflite"), str(d / "inputs.npy"), str(d / "out.npz")]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout_s, env=env,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"{runtime.value}: no result within {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not (d / "out.npz").exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeFailure(
                f"{runtime.value} failed (exit {proc.returncode}): {' | '.join(tail)}"
            )
        with np.load(d / "out.npz") as out:
            raw, values = out["raw"], out["values"]
            iq, oq = out["input_quant"], out["output_quant"]
    match = _ARENA.search(proc.stdout + proc.stderr)
    return RuntimeOutput(
        runtime, raw, values, (float(iq[0]), int(iq[1])), (float(oq[0]), int(oq[1])),
        int(match.group(1)) if match else None, time.monotonic() - started,
    )
