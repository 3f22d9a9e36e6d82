"""Run a .tflite model in one TFLite runtime, in its own process.

``python -m services.trainer.runtime_worker RUNTIME MODEL INPUTS.npy OUT.npz``

The parity gate starts one of these per runtime, because tflite_runtime cannot share a
process with TensorFlow (it fails with ``vector::reserve``) and the runtimes' native
libraries are best kept apart. This module imports numpy and one runtime, nothing else.
Inputs are float32 model inputs; int8 models are (de)quantised here with the model's own
tensor parameters, as the edge's runtime wrapper does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RUNTIMES = ("litert", "tflite_runtime", "tflm")


def _quantize(x: npt.NDArray[np.float32], dtype: Any, scale: float, zp: int) -> npt.NDArray[Any]:
    if dtype == np.int8 and scale:
        q: npt.NDArray[Any] = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
        return q
    same: npt.NDArray[Any] = x.astype(dtype)
    return same


def _dequantize(y: npt.NDArray[Any], scale: float, zp: int) -> npt.NDArray[np.float32]:
    if y.dtype == np.int8 and scale:
        return ((y.astype(np.float32) - zp) * scale).astype(np.float32)
    return y.astype(np.float32)


def _run_interpreter(runtime: str, model: bytes, x: npt.NDArray[np.float32]) -> dict[str, Any]:
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    raw = []
    for row in x:
        it.set_tensor(inp["index"], _quantize(row[None], inp["dtype"], in_scale, in_zp))
        it.invoke()
        raw.append(np.array(it.get_tensor(out["index"])[0]))
    raw_arr = np.stack(raw)
    return {"raw": raw_arr, "values": _dequantize(raw_arr, out_scale, out_zp),
            "input_quant": np.array([in_scale, in_zp], np.float64),
            "output_quant": np.array([out_scale, out_zp], np.float64)}


def _run_tflm(model: bytes, x: npt.NDArray[np.float32]) -> dict[str, Any]:
    from tflite_micro.python.tflite_micro import runtime

    # A generous arena; the real need is printed by print_allocations (parsed by the parent).
    it = runtime.Interpreter.from_bytes(model, arena_size=max(64 * 1024, len(model) * 10))
    inp, out = it.get_input_details(0), it.get_output_details(0)
    in_q, out_q = inp["quantization_parameters"], out["quantization_parameters"]
    in_scale = float(in_q["scales"][0]) if len(in_q["scales"]) else 0.0
    in_zp = int(in_q["zero_points"][0]) if len(in_q["zero_points"]) else 0
    out_scale = float(out_q["scales"][0]) if len(out_q["scales"]) else 0.0
    out_zp = int(out_q["zero_points"][0]) if len(out_q["zero_points"]) else 0
    raw = []
    for row in x:
        it.set_input(_quantize(row[None], inp["dtype"], in_scale, in_zp), 0)
        it.invoke()
        raw.append(np.array(it.get_output(0)[0]))
    sys.stdout.flush()
    it.print_allocations()
    raw_arr = np.stack(raw)
    return {"raw": raw_arr, "values": _dequantize(raw_arr, out_scale, out_zp),
            "input_quant": np.array([in_scale, in_zp], np.float64),
            "output_quant": np.array([out_scale, out_zp], np.float64)}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in RUNTIMES:
        print(f"usage: runtime_worker {{{','.join(RUNTIMES)}}} MODEL INPUTS.npy OUT.npz",
              file=sys.stderr)
        return 2
    runtime, model_path, inputs_path, out_path = argv
    model = Path(model_path).read_bytes()
    x = np.load(inputs_path).astype(np.float32)
    result = _run_tflm(model, x) if runtime == "tflm" else _run_interpreter(runtime, model, x)
    if "tensorflow" in sys.modules:  # the isolation this process exists for
        print("tensorflow was imported in a runtime worker", file=sys.stderr)
        return 3
    np.savez(out_path, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
