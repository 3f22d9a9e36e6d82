"""Runtimes agree with each other and with the numpy reference; int8 is dequantized with
the model's own parameters; batching gives the same numbers as one invoke per row."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from services.inference import pipeline
from services.inference.runtimes import (
    NumpyReference,
    RuntimeError_,
    RuntimeKind,
    ShapeError,
    TfliteRuntime,
    create_runtime,
)
from tests.support import tiny_models as tm


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


def _x(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", [tm.FORECAST, tm.CLASSIFY])
def test_litert_matches_the_numpy_reference(tiny: tm.TinyModels, name: str) -> None:
    files = tiny.files(name)
    lite = TfliteRuntime(RuntimeKind.LITERT, files["model.tflite"])
    ref = NumpyReference(files["reference.npz"])
    assert lite.input_shape == ref.input_shape
    x = _x(50, lite.input_shape)
    np.testing.assert_allclose(lite.predict(x), ref.predict(x), atol=1e-4)


def test_int8_runtime_quantizes_with_the_models_parameters(tiny: tm.TinyModels) -> None:
    files = tiny.files(tm.FORECAST_INT8)
    q = TfliteRuntime(RuntimeKind.LITERT, files["model.tflite"])
    f = TfliteRuntime(RuntimeKind.LITERT, files["model_float.tflite"])
    assert q.input_dtype == "int8" and f.input_dtype == "float32"
    # Windows like the calibration data (int8 saturates outside the calibrated ranges).
    card = tiny.card(tm.FORECAST_INT8)
    phase = np.random.default_rng(2).uniform(0, 160, 200)
    raws = 22 + 3 * np.sin((phase[:, None] + np.arange(8)) / 25.0)
    x = pipeline.prepare(card, raws.tolist())
    yq, yf = q.predict(x), f.predict(x)
    assert yq.dtype == np.float32
    # Dequantized outputs track the float model to within a few output steps.
    assert card.quantization is not None
    assert np.max(np.abs(yq - yf)) < 6 * card.quantization.output_scale
    assert np.corrcoef(yq.ravel(), yf.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("n", [2, 8, 9, 100, 600])
def test_batched_predict_equals_row_by_row(tiny: tm.TinyModels, n: int) -> None:
    rt = TfliteRuntime(RuntimeKind.LITERT, tiny.files(tm.FORECAST_INT8)["model.tflite"])
    x = _x(n, rt.input_shape, seed=n)
    rows = np.concatenate([rt.predict(x[i : i + 1]) for i in range(n)])
    np.testing.assert_array_equal(rt.predict(x), rows)


def test_shape_errors_and_missing_runtimes(tiny: tm.TinyModels) -> None:
    files = tiny.files(tm.FORECAST)
    rt = create_runtime(files, "model.tflite", [RuntimeKind.LITERT])
    with pytest.raises(ShapeError):
        rt.predict(np.zeros((1, 7), np.float32))
    with pytest.raises(ShapeError):
        rt.predict(np.zeros((0, 8), np.float32))
    with pytest.raises(RuntimeError_, match="no runtime"):
        create_runtime({"model.tflite": b"not a model"}, "model.tflite", [RuntimeKind.LITERT])
    with pytest.raises(RuntimeError_, match=r"reference\.npz"):
        create_runtime({"model.tflite": files["model.tflite"]}, "model.tflite",
                       [RuntimeKind.NUMPY])
    # A preference list falls through to the next runtime that can load the model.
    assert create_runtime(files, "model.tflite",
                          [RuntimeKind.NUMPY, RuntimeKind.LITERT]).kind is RuntimeKind.NUMPY


_TFLITE_RUNTIME = r"""
import json, sys
import numpy as np
from services.inference.runtimes import RuntimeKind, TfliteRuntime
model = open(sys.argv[1], "rb").read()
x = np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)
rt = TfliteRuntime(RuntimeKind.TFLITE_RUNTIME, model)
print(json.dumps(rt.predict(x).tolist()))
"""


@pytest.mark.parametrize("name", [tm.FORECAST, tm.FORECAST_INT8])
def test_tflite_runtime_fallback_matches_litert(tiny: tm.TinyModels, name: str) -> None:
    # tflite_runtime runs in a child: this test process may share pytest with modules
    # that import TensorFlow, and the two must never meet in one process.
    path = tiny.root / name / "model.tflite"
    lite = TfliteRuntime(RuntimeKind.LITERT, path.read_bytes())
    x = _x(20, lite.input_shape, seed=5)
    proc = subprocess.run([sys.executable, "-c", _TFLITE_RUNTIME, str(path)],
                          input=json.dumps(x.tolist()), capture_output=True, text=True,
                          timeout=120, cwd=tm.REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.asarray(json.loads(proc.stdout)), lite.predict(x), atol=1e-5)
