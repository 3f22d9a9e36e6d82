"""Inference runtimes behind one small interface, chosen by config.

* LiteRT (``ai_edge_litert``): preferred; works with numpy 2 and ships arm64 wheels.
* ``tflite_runtime`` 2.14: the fallback for 32-bit Pi OS.
* A numpy reference that runs dense layers from weights stored in the bundle
  (``reference.npz``), so tests can cross-check a TFLite runtime against plain arithmetic.

Every runtime takes and returns float32 batches. Int8 models are quantized and
dequantized here with the model's own tensor parameters, never the card's copy, so a
card that disagrees with its model cannot skew outputs.

An interpreter is not thread-safe, so each runtime serialises ``predict`` with a lock.
TensorFlow is never imported here.
"""

from __future__ import annotations

import enum
import importlib
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class RuntimeKind(enum.StrEnum):
    LITERT = "litert"
    TFLITE_RUNTIME = "tflite-runtime"
    NUMPY = "numpy"


#: Tried in this order when the config says ``auto``.
AUTO_ORDER: tuple[RuntimeKind, ...] = (RuntimeKind.LITERT, RuntimeKind.TFLITE_RUNTIME)
REFERENCE_FILE = "reference.npz"


class RuntimeError_(RuntimeError):
    """A model that cannot be loaded or run by a runtime."""


class ShapeError(ValueError):
    """An input whose shape does not fit the model."""


class Runtime(Protocol):
    kind: RuntimeKind

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension."""

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output shape without the batch dimension."""

    @property
    def input_dtype(self) -> str:
        """``float32`` or ``int8``: what the tensor holds, not what callers pass."""

    def predict(self, x: F32) -> F32:
        """Run a float32 batch of shape ``(n, *input_shape)``; return ``(n, *output_shape)``."""


def _check_batch(x: F32, shape: tuple[int, ...]) -> F32:
    if x.shape[1:] != shape:
        raise ShapeError(
            f"input shape {list(x.shape[1:])} does not match model input {list(shape)}"
        )
    if x.shape[0] < 1:
        raise ShapeError("empty batch")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    return x


@dataclass(frozen=True, slots=True)
class _Quant:
    scale: float
    zero_point: int

    @staticmethod
    def of(detail: dict[str, Any]) -> _Quant | None:
        scale, zp = detail.get("quantization", (0.0, 0))
        if detail["dtype"] in (np.int8, np.uint8) and scale:
            return _Quant(float(scale), int(zp))
        return None


class TfliteRuntime:
    """LiteRT or tflite_runtime: one interpreter per batch size bucket.

    Batches are run by resizing the input tensor once per distinct batch size (kept in a
    small cache of interpreters), which is ~10x faster than invoking row by row; models
    whose graph cannot be resized fall back to one invoke per row.
    """

    #: Interpreters kept for distinct batch sizes; bigger batches are padded up to these.
    BUCKETS: tuple[int, ...] = (1, 8, 64, 512, 4096)

    def __init__(self, kind: RuntimeKind, model: bytes, num_threads: int = 1) -> None:
        self.kind = kind
        self._model = model
        self._threads = num_threads
        self._cls = _interpreter_class(kind)
        self._lock = threading.Lock()
        self._interps: dict[int, Any] = {}
        self._resizable = True
        base = self._new(1)
        inp = base.get_input_details()
        out = base.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise RuntimeError_(f"models with {len(inp)} inputs / {len(out)} outputs "
                                "are not supported (want 1 and 1)")
        self._in_shape = tuple(int(d) for d in inp[0]["shape"][1:])
        self._out_shape = tuple(int(d) for d in out[0]["shape"][1:])
        self._in_dtype = np.dtype(inp[0]["dtype"])
        self._in_q = _Quant.of(inp[0])
        self._out_q = _Quant.of(out[0])
        # Looked up once: get_*_details() builds dicts and costs more than a tiny invoke.
        self._in_index = int(inp[0]["index"])
        self._out_index = int(out[0]["index"])
        self._interps[1] = base

    def _new(self, batch: int) -> Any:
        try:
            interp = self._cls(model_content=self._model, num_threads=self._threads)
            if batch != 1:
                idx = interp.get_input_details()[0]["index"]
                shape = list(interp.get_input_details()[0]["shape"])
                interp.resize_tensor_input(idx, [batch, *shape[1:]], strict=False)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError_(f"{self.kind.value} cannot load the model: {exc}") from None
        return interp

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._in_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._out_shape

    @property
    def input_dtype(self) -> str:
        return "int8" if self._in_dtype == np.int8 else str(self._in_dtype)

    def _quantize(self, x: F32) -> npt.NDArray[Any]:
        if self._in_q is None:
            return x.astype(self._in_dtype, copy=False)
        info = np.iinfo(self._in_dtype)
        q = np.round(x / self._in_q.scale) + self._in_q.zero_point
        out: npt.NDArray[Any] = np.clip(q, info.min, info.max).astype(self._in_dtype)
        return out

    def _dequantize(self, y: npt.NDArray[Any]) -> F32:
        if self._out_q is None:
            return y.astype(np.float32, copy=False)
        return ((y.astype(np.float32) - self._out_q.zero_point) * self._out_q.scale).astype(
            np.float32
        )

    def _invoke(self, interp: Any, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        # Resizing keeps tensor indices, so the ones read at load time hold for every bucket.
        interp.set_tensor(self._in_index, x)
        interp.invoke()
        out = np.asarray(interp.get_tensor(self._out_index))
        return out

    def _bucket(self, n: int) -> int:
        for b in self.BUCKETS:
            if n <= b:
                return b
        return n

    def predict(self, x: F32) -> F32:
        x = _check_batch(x, self._in_shape)
        q = self._quantize(x)
        n = q.shape[0]
        with self._lock:
            if n == 1:
                return self._dequantize(self._invoke(self._interps[1], q).copy())
            if self._resizable:
                size = self._bucket(n)
                try:
                    interp = self._interps.get(size) or self._interps.setdefault(
                        size, self._new(size)
                    )
                    if size != n:
                        pad = np.zeros((size - n, *q.shape[1:]), dtype=q.dtype)
                        q_in = np.concatenate([q, pad])
                    else:
                        q_in = q
                    return self._dequantize(self._invoke(interp, q_in)[:n].copy())
                except RuntimeError_:
                    self._resizable = False
            rows = [self._invoke(self._interps[1], q[i : i + 1]).copy() for i in range(n)]
            return self._dequantize(np.concatenate(rows))


class NumpyReference:
    """Dense layers from ``reference.npz``: ``w0,b0,w1,b1,...`` and ``act`` per layer.

    ``act`` holds one of ``relu``, ``linear``, ``softmax``, ``sigmoid`` per layer.
    Enough to cross-check the TFLite runtimes on the small models tests build.
    """

    kind = RuntimeKind.NUMPY

    def __init__(self, npz: bytes) -> None:
        try:
            with np.load(io.BytesIO(npz), allow_pickle=False) as data:
                acts = [str(a) for a in data["act"]]
                self._layers = [
                    (data[f"w{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32), a)
                    for i, a in enumerate(acts)
                ]
                self._in_shape = tuple(int(d) for d in data["input_shape"])
        except (KeyError, ValueError, OSError) as exc:
            raise RuntimeError_(f"not a numpy reference model: {exc}") from None
        self._out_shape = (int(self._layers[-1][0].shape[1]),)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._in_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._out_shape

    @property
    def input_dtype(self) -> str:
        return "float32"

    def predict(self, x: F32) -> F32:
        x = _check_batch(x, self._in_shape)
        h = x.reshape(x.shape[0], -1)
        for w, b, act in self._layers:
            h = h @ w + b
            if act == "relu":
                h = np.maximum(h, 0.0)
            elif act == "sigmoid":
                h = 1.0 / (1.0 + np.exp(-h))
            elif act == "softmax":
                e = np.exp(h - h.max(axis=1, keepdims=True))
                h = e / e.sum(axis=1, keepdims=True)
        return h.astype(np.float32)


def _interpreter_class(kind: RuntimeKind) -> Any:
    module = {
        RuntimeKind.LITERT: "ai_edge_litert.interpreter",
        RuntimeKind.TFLITE_RUNTIME: "tflite_runtime.interpreter",
    }[kind]
    try:
        return importlib.import_module(module).Interpreter
    except ImportError as exc:
        raise RuntimeError_(f"runtime {kind.value} is not installed: {exc}") from None


def available(kind: RuntimeKind) -> bool:
    if kind is RuntimeKind.NUMPY:
        return True
    try:
        _interpreter_class(kind)
    except RuntimeError_:
        return False
    return True


def create_runtime(
    files: dict[str, bytes],
    model_file: str,
    preference: Sequence[RuntimeKind],
    num_threads: int = 1,
) -> Runtime:
    """The first runtime in ``preference`` that is installed and can load the model."""
    errors: list[str] = []
    for kind in preference:
        try:
            if kind is RuntimeKind.NUMPY:
                if REFERENCE_FILE not in files:
                    raise RuntimeError_(f"bundle has no {REFERENCE_FILE}")
                return NumpyReference(files[REFERENCE_FILE])
            return TfliteRuntime(kind, files[model_file], num_threads)
        except RuntimeError_ as exc:
            errors.append(str(exc))
    raise RuntimeError_("no runtime could load the model: " + "; ".join(errors))
