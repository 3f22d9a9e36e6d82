"""C export of an int8 model for microcontrollers (no TensorFlow import).

Writes a header/source pair with

- the int8 ``.tflite`` as a 16-byte aligned array, for TensorFlow Lite Micro users;
- the edgeloop firmware's own compact model image (the *blob*: layer weights, biases,
  requantization multipliers/shifts, zero points, normalisation and int8 test vectors),
  which ``edgeloop device update-model`` streams to a device;
- constants: input/output scale and zero point, window length, normalisation, the test
  vectors and an arena size for TFLite Micro.

The ``.tflite`` flatbuffer is read here with a few lines of ``struct`` (the TFLite schema's
table/vtable layout) rather than through an interpreter: the trainer calls this from a
process that has TensorFlow loaded, where loading a second TFLite runtime is asking for
trouble, and the fields we need (tensors, buffers, quantization, operator options) are a
handful. TFLite Micro itself runs in a child process, when it is installed, to measure the
arena and to produce the test vectors' expected outputs; its outputs must equal this
module's integer reference bit for bit, or the export is refused, because the firmware
runs the same integer arithmetic as the reference.
"""

from __future__ import annotations

import enum
import json
import math
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard, Pipeline

#: Matches firmware/core/model.h.
BLOB_MAGIC = b"ELM1"
BLOB_FORMAT = 1
BLOB_HEADER_SIZE = 64
MAX_FIELDS = 4
MAX_WIDTH = 128
MAX_LAYERS = 8
#: firmware/core/model.h MODEL_MAX_WINDOW: readings the device keeps per window.
MAX_WINDOW = 64
#: firmware/core/slots.h SLOT_SIZE: the largest image a device slot holds.
SLOT_SIZE = 16384
#: Fields the firmware samples, in its reading order.
DEVICE_FIELDS = ("temp", "humidity", "pressure")
#: Test vectors embedded in the blob (the device runs them before activating a model).
N_TEST_VECTORS = 6


class UnsupportedModel(ValueError):
    """The model uses something the firmware cannot run (the C export is skipped)."""


class TensorType(enum.IntEnum):
    FLOAT32 = 0
    INT32 = 2
    INT8 = 9


class BuiltinOp(enum.IntEnum):
    DEQUANTIZE = 6
    FULLY_CONNECTED = 9
    RESHAPE = 22
    QUANTIZE = 114


class Activation(enum.IntEnum):
    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3


# ---------------------------------------------------------------------------------------
# A minimal flatbuffer reader for the TFLite schema (tensorflow/lite/schema/schema.fbs).


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vt = vtable
        self._vt_len = struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self._vt_len:
            return None
        off = int(struct.unpack_from("<H", self.buf, self._vt + slot)[0])
        return self.pos + off if off else None

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> Any:
        at = self._field(index)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _vector(self, index: int) -> tuple[int, int] | None:
        at = self._field(index)
        if at is None:
            return None
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        return start + 4, int(struct.unpack_from("<I", self.buf, start)[0])

    def vector(self, index: int, fmt: str) -> list[Any]:
        vec = self._vector(index)
        if vec is None:
            return []
        start, n = vec
        return list(struct.unpack_from(f"<{n}{fmt}", self.buf, start))

    def bytes_(self, index: int) -> bytes:
        vec = self._vector(index)
        return b"" if vec is None else bytes(self.buf[vec[0] : vec[0] + vec[1]])

    def tables(self, index: int) -> list[_Table]:
        vec = self._vector(index)
        if vec is None:
            return []
        start, n = vec
        out = []
        for k in range(n):
            at = start + 4 * k
            out.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return out

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        if at is None:
            return None
        return _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def string(self, index: int) -> str:
        return self.bytes_(index).decode("utf-8", "replace")


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: int
    data: bytes
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]

    @property
    def scale(self) -> float:
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0


@dataclass(frozen=True)
class Op:
    code: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    activation: int


@dataclass(frozen=True)
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_tflite(data: bytes) -> Graph:
    """Subgraph 0 of a .tflite: tensors (with constant data and quantization) and ops."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UnsupportedModel("not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = []
        for oc in model.tables(1):
            deprecated = int(oc.scalar(0, "b", 0))
            builtin = int(oc.scalar(3, "i", 0))
            codes.append(max(deprecated, builtin))
        buffers = [b.bytes_(0) for b in model.tables(4)]
        subgraphs = model.tables(2)
        if len(subgraphs) != 1:
            raise UnsupportedModel(f"{len(subgraphs)} subgraphs; the firmware runs one")
        sg = subgraphs[0]
        tensors = []
        for t in sg.tables(0):
            q = t.table(4)
            buf_index = int(t.scalar(2, "I", 0))
            tensors.append(Tensor(
                name=t.string(3),
                shape=tuple(t.vector(0, "i")),
                type=int(t.scalar(1, "b", 0)),
                data=buffers[buf_index] if buf_index < len(buffers) else b"",
                scales=tuple(q.vector(2, "f")) if q else (),
                zero_points=tuple(q.vector(3, "q")) if q else (),
            ))
        ops = []
        for o in sg.tables(3):
            code = codes[int(o.scalar(0, "I", 0))]
            opts = o.table(4)
            act = int(opts.scalar(0, "b", 0)) if opts and code == BuiltinOp.FULLY_CONNECTED else 0
            ops.append(Op(code, tuple(o.vector(1, "i")), tuple(o.vector(2, "i")), act))
        return Graph(tensors, ops, tuple(sg.vector(1, "i")), tuple(sg.vector(2, "i")))
    except (struct.error, IndexError) as exc:
        raise UnsupportedModel(f"malformed .tflite: {exc}") from None


# ---------------------------------------------------------------------------------------
# TFLite's integer arithmetic, in numpy, as the firmware implements it.


def quantize_multiplier(real: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier: real = q * 2^(shift - 31), q in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    mant, shift = math.frexp(real)
    # TfLiteRound is half away from zero; mant is positive here.
    q = math.floor(mant * (1 << 31) + 0.5)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise UnsupportedModel(f"requantization multiplier {real} is out of range")
    return q, shift


def _srdhm(a: npt.NDArray[np.int64], b: int) -> npt.NDArray[np.int64]:
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C division truncates toward zero.
    q = np.abs(num) // (1 << 31) * np.sign(num)
    return np.where((a == -(1 << 31)) & (b == -(1 << 31)), (1 << 31) - 1, q)


def _rdbpot(x: npt.NDArray[np.int64], exponent: int) -> npt.NDArray[np.int64]:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: npt.NDArray[np.int64], multiplier: int, shift: int
) -> npt.NDArray[np.int64]:
    left = max(shift, 0)
    right = max(-shift, 0)
    shifted = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)  # int32 wrap, like C
    return _rdbpot(_srdhm(shifted, multiplier), right)


@dataclass(frozen=True)
class FcLayer:
    weights: npt.NDArray[np.int8]  # (out, in)
    bias: npt.NDArray[np.int32]
    multipliers: list[int]
    shifts: list[int]
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int

    def run(self, x: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
        acc = (x.astype(np.int64)[None, :] + self.input_offset) * self.weights.astype(np.int64)
        total = acc.sum(axis=1) + self.bias.astype(np.int64)
        out = np.empty_like(total)
        for o in range(total.shape[0]):
            k = 0 if len(self.multipliers) == 1 else o
            out[o] = multiply_by_quantized_multiplier(
                total[o : o + 1], self.multipliers[k], self.shifts[k]
            )[0]
        clipped: npt.NDArray[np.int8] = np.clip(
            out + self.output_offset, self.act_min, self.act_max).astype(np.int8)
        return clipped


@dataclass(frozen=True)
class IntModel:
    layers: list[FcLayer]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    n_inputs: int
    n_outputs: int
    float_io: bool

    def run(self, x: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
        for layer in self.layers:
            x = layer.run(x)
        return x


def _activation_range(act: int, scale: float, zp: int) -> tuple[int, int]:
    """tflite::CalculateActivationRangeQuantized for int8."""
    def q(v: float) -> int:
        return zp + int(math.floor(v / scale + 0.5) if v >= 0 else math.ceil(v / scale - 0.5))

    if act == Activation.NONE:
        return -128, 127
    if act == Activation.RELU:
        return max(-128, q(0.0)), 127
    if act == Activation.RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if act == Activation.RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise UnsupportedModel(f"fused activation {act} is not supported by the firmware")


def int_model(graph: Graph) -> IntModel:
    """The FULLY_CONNECTED chain the firmware runs, with its requantization constants."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModel("the firmware runs single-input single-output models")
    t = graph.tensors
    ops = list(graph.ops)
    float_io = False
    if ops and ops[0].code == BuiltinOp.QUANTIZE:
        float_io = True
        ops = ops[1:]
    if ops and ops[-1].code == BuiltinOp.DEQUANTIZE:
        ops = ops[:-1]
    layers: list[FcLayer] = []
    first_in: Tensor | None = None
    last_out: Tensor | None = None
    for op in ops:
        if op.code == BuiltinOp.RESHAPE:
            continue  # a flatten: the firmware's tensors are flat already
        if op.code != BuiltinOp.FULLY_CONNECTED:
            name = BuiltinOp(op.code).name if op.code in BuiltinOp._value2member_map_ else op.code
            raise UnsupportedModel(f"operator {name} is not supported by the firmware")
        x, w = t[op.inputs[0]], t[op.inputs[1]]
        b = t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        y = t[op.outputs[0]]
        if x.type != TensorType.INT8 or w.type != TensorType.INT8 or y.type != TensorType.INT8:
            raise UnsupportedModel("the firmware runs int8 FULLY_CONNECTED only")
        if not w.data or len(w.shape) != 2:
            raise UnsupportedModel("FULLY_CONNECTED weights must be constant 2-D")
        out_n, in_n = w.shape
        if any(z != 0 for z in w.zero_points):
            raise UnsupportedModel("asymmetric weights are not supported")
        weights = np.frombuffer(w.data, dtype=np.int8).reshape(out_n, in_n)
        bias = (np.frombuffer(b.data, dtype="<i4").astype(np.int32) if b is not None and b.data
                else np.zeros(out_n, np.int32))
        mults, shifts = [], []
        for ws in w.scales:
            # TFLM: double(input_scale) * double(filter_scale) / double(output_scale).
            real = float(np.float32(x.scale)) * float(np.float32(ws)) / float(np.float32(y.scale))
            m, s = quantize_multiplier(real)
            mults.append(m)
            shifts.append(s)
        if len(mults) not in (1, out_n):
            raise UnsupportedModel("weight scales are neither per-tensor nor per-channel")
        lo, hi = _activation_range(op.activation, y.scale, y.zero_point)
        layers.append(FcLayer(weights, bias, mults, shifts, -x.zero_point, y.zero_point, lo, hi))
        first_in = first_in or x
        last_out = y
    if not layers or first_in is None or last_out is None:
        raise UnsupportedModel("no FULLY_CONNECTED layers")
    if len(layers) > MAX_LAYERS or any(
        layer.weights.shape[0] > MAX_WIDTH or layer.weights.shape[1] > MAX_WIDTH
        for layer in layers
    ):
        raise UnsupportedModel(f"more than {MAX_LAYERS} layers or wider than {MAX_WIDTH}")
    return IntModel(
        layers=layers,
        input_scale=first_in.scale, input_zero_point=first_in.zero_point,
        output_scale=last_out.scale, output_zero_point=last_out.zero_point,
        n_inputs=layers[0].weights.shape[1], n_outputs=layers[-1].weights.shape[0],
        float_io=float_io,
    )


def quantize(x: npt.ArrayLike, scale: float, zero_point: int) -> npt.NDArray[np.int8]:
    """TFLite AffineQuantize: round half away from zero of x/scale (in float32), + zp."""
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    q: npt.NDArray[np.int8] = np.clip(r + zero_point, -128, 127).astype(np.int8)
    return q


# ---------------------------------------------------------------------------------------
# The blob.


@dataclass(frozen=True)
class DeviceSpec:
    """How the device feeds the model: which of its fields, normalisation, threshold."""

    field_ids: list[int]
    target: int
    window: int
    in_mean: list[float]
    in_std: list[float]
    out_mean: float
    out_std: float
    threshold: float


def device_spec(card: ModelCard, model: IntModel, threshold: float | None) -> DeviceSpec:
    if card.pipeline is not Pipeline.WINDOW:
        raise UnsupportedModel(f"pipeline {card.pipeline} is not run on the device")
    fields = list(card.input.fields)
    unknown = [f for f in fields if f not in DEVICE_FIELDS]
    if unknown or len(fields) > MAX_FIELDS:
        raise UnsupportedModel(f"fields {unknown or fields} are not sampled by the firmware")
    if card.input.window > MAX_WINDOW:
        raise UnsupportedModel(f"window {card.input.window} > {MAX_WINDOW} samples")
    if card.input.window * len(fields) != model.n_inputs:
        raise UnsupportedModel(
            f"window {card.input.window} x {len(fields)} fields != {model.n_inputs} inputs"
        )
    horizon = card.pipeline_params.get("horizon", 1)
    if horizon != 1:
        raise UnsupportedModel(
            f"horizon {horizon}: the firmware compares each reading with a one-step forecast"
        )
    target_name = card.input.target or fields[0]
    if target_name not in fields:
        raise UnsupportedModel(f"target {target_name!r} is not an input field")
    norm = card.normalization
    mean = list(norm.input_mean) or [0.0] * len(fields)
    std = list(norm.input_std) or [1.0] * len(fields)
    if len(mean) != len(fields) or len(std) != len(fields):
        raise UnsupportedModel("the firmware needs one normalisation entry per field")
    out_mean = norm.output_mean[0] if norm.output_mean else 0.0
    out_std = norm.output_std[0] if norm.output_std else 1.0
    return DeviceSpec(
        field_ids=[DEVICE_FIELDS.index(f) for f in fields],
        target=fields.index(target_name),
        window=card.input.window,
        in_mean=mean, in_std=std, out_mean=out_mean, out_std=out_std,
        threshold=threshold if threshold is not None else default_threshold(card),
    )


def default_threshold(card: ModelCard) -> float:
    """Residual above which a reading is an anomaly, in the target's units.

    ``metrics["anomaly_threshold"]`` when the trainer set one; else 6 residual standard
    deviations (or 8 MAEs) on held-out data; never below 0.5 (sensor noise and the int8
    model's own error add up to about that on the workshop data).
    """
    top = card.metrics
    for key in ("anomaly_threshold", "threshold"):
        if isinstance(top.get(key), int | float):
            return float(top[key])
    # The trainer keeps held-out errors under "test"; older cards at the top level.
    held_out = top.get("test")
    for m in (held_out if isinstance(held_out, dict) else {}, top):
        for key, k in (("residual_std", 6.0), ("rmse", 6.0), ("mae", 8.0)):
            value = m.get(key)
            if isinstance(value, int | float) and value > 0:
                return max(0.5, k * float(value))
    return 1.0


def _pad4(b: bytearray) -> None:
    b.extend(b"\0" * (-len(b) % 4))


def build_blob(name: str, version: int, model: IntModel, spec: DeviceSpec,
               vectors: Sequence[tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]]) -> bytes:
    """The firmware's model image (layout in firmware/core/model.h)."""
    body = bytearray()
    body += struct.pack(f"<{len(spec.in_mean)}f", *spec.in_mean)
    body += struct.pack(f"<{len(spec.in_std)}f", *spec.in_std)
    body += struct.pack("<ff", spec.out_mean, spec.out_std)
    ids = spec.field_ids + [0xFF] * (MAX_FIELDS - len(spec.field_ids))
    body += bytes(ids)
    for layer in model.layers:
        out_n, in_n = layer.weights.shape
        act = 0  # informational; act_min/act_max carry the activation
        body += struct.pack("<HHBBbbii", in_n, out_n, act, len(layer.multipliers),
                            layer.act_min, layer.act_max, layer.input_offset,
                            layer.output_offset)
        body += layer.bias.astype("<i4").tobytes()
        body += struct.pack(f"<{len(layer.multipliers)}i", *layer.multipliers)
        body += struct.pack(f"<{len(layer.shifts)}i", *layer.shifts)
        body += layer.weights.astype(np.int8).tobytes()
        _pad4(body)
    for x, y in vectors:
        body += x.astype(np.int8).tobytes() + y.astype(np.int8).tobytes()
        _pad4(body)
    total = BLOB_HEADER_SIZE + len(body)
    return _header(name, version, model, spec, total, len(vectors)) + bytes(body)


def _header(name: str, version: int, model: IntModel, spec: DeviceSpec, total: int,
            n_vectors: int) -> bytes:
    h = bytearray(BLOB_HEADER_SIZE)
    struct.pack_into("<4sHHI", h, 0, BLOB_MAGIC, BLOB_FORMAT, BLOB_HEADER_SIZE, total)
    h[12:28] = name.encode("ascii", "replace")[:16].ljust(16, b"\0")
    struct.pack_into("<IHBBHH", h, 28, version, spec.window, len(spec.field_ids),
                     spec.target, model.n_inputs, model.n_outputs)
    struct.pack_into("<fifif", h, 40, model.input_scale, model.input_zero_point,
                     model.output_scale, model.output_zero_point, spec.threshold)
    struct.pack_into("<HH", h, 60, len(model.layers), n_vectors)
    return bytes(h)


# ---------------------------------------------------------------------------------------
# TFLite Micro in a child process: arena size and the reference outputs.

_TFLM_SCRIPT = r"""
import json, sys
import numpy as np
from tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
inputs = json.loads(sys.stdin.read())
def make(arena):
    return runtime.Interpreter.from_bytes(model, arena_size=arena)
lo, hi = 64, 1 << 20
while lo < hi:
    mid = (lo + hi) // 2
    try:
        make(mid)
        hi = mid
    except Exception:
        lo = mid + 1
interp = make(max(lo, 1024) * 2)
detail = interp.get_input_details(0)
outs = []
for x in inputs:
    interp.set_input(np.asarray(x, dtype=detail["dtype"]).reshape(detail["shape"]), 0)
    interp.invoke()
    outs.append(np.asarray(interp.get_output(0)).reshape(-1).tolist())
print(json.dumps({"arena": lo, "outputs": outs}))
"""


def run_tflm(tflite: bytes, inputs: list[list[float]], workdir: Path,
             timeout_s: float = 120.0) -> tuple[int, list[list[float]]] | None:
    """Minimum arena (bytes) and outputs from TFLite Micro, or None if it cannot run."""
    path = workdir / ".tflm_model.tflite"
    path.write_bytes(tflite)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TFLM_SCRIPT, str(path)], input=json.dumps(inputs),
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode != 0:
        return None
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        doc = json.loads(last)
    except json.JSONDecodeError:
        return None
    return int(doc["arena"]), [list(map(float, o)) for o in doc["outputs"]]


def estimate_arena(model: IntModel) -> int:
    """Without TFLite Micro: two activation buffers plus TFLM's per-op overhead, rounded."""
    widest = max(max(layer.weights.shape) for layer in model.layers)
    return 16 * ((2 * widest + 256 * (len(model.layers) + 2) + 15) // 16)


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CExport:
    header: Path
    source: Path
    blob: bytes
    arena_bytes: int
    #: "tflite-micro" when TFLite Micro produced the arena and expected outputs.
    reference: str = "numpy"
    blob_crc32: int = 0


def supports(int8_tflite: bytes, card: ModelCard) -> str | None:
    """None when the firmware can run this model, else the reason it cannot."""
    try:
        device_spec(card, int_model(read_tflite(int8_tflite)), None)
    except UnsupportedModel as exc:
        return str(exc)
    return None


def _test_inputs(card: ModelCard, model: IntModel, spec: DeviceSpec
                 ) -> list[npt.NDArray[np.int8]]:
    """Int8 inputs: the card's own test vectors (quantized), then seeded random ones."""
    out: list[npt.NDArray[np.int8]] = []
    for tv in card.test_vectors[: N_TEST_VECTORS // 2]:
        raw = np.asarray(tv.input, dtype=np.float64).reshape(spec.window, len(spec.field_ids))
        norm = (raw - np.asarray(spec.in_mean)) / np.asarray(spec.in_std)
        out.append(quantize(norm.reshape(-1), model.input_scale, model.input_zero_point))
    rng = np.random.default_rng(20261122)
    while len(out) < N_TEST_VECTORS:
        out.append(rng.integers(-128, 128, size=model.n_inputs).astype(np.int8))
    return out


def _c_array(values: bytes, per_line: int = 16) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in values[i : i + per_line]) + ",")
    return "\n".join(lines)


def _c_float(v: float) -> str:
    return f"{float(np.float32(v))!r}f"


def export_c(int8_tflite: bytes, card: ModelCard, out_dir: Path,
             symbol: str = "edgeloop_model", *, threshold: float | None = None,
             use_tflm: bool = True) -> CExport:
    """Write ``<symbol>.h`` and ``<symbol>.c`` into out_dir; return them with the blob."""
    if not symbol.isidentifier():
        raise ValueError(f"symbol {symbol!r} is not a C identifier")
    model = int_model(read_tflite(int8_tflite))
    spec = device_spec(card, model, threshold)
    inputs = _test_inputs(card, model, spec)
    expected = [model.run(x) for x in inputs]
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = "numpy"
    arena = estimate_arena(model)
    if use_tflm:
        tflm_inputs = [
            ((x.astype(np.float32) - model.input_zero_point) * model.input_scale).tolist()
            if model.float_io else x.astype(int).tolist()
            for x in inputs
        ]
        tflm = run_tflm(int8_tflite, tflm_inputs, out_dir)
        if tflm is not None:
            arena, outs = tflm
            for x, ours, theirs in zip(inputs, expected, outs, strict=True):
                got = (quantize(theirs, model.output_scale, model.output_zero_point)
                       if model.float_io else np.asarray(theirs).astype(np.int8))
                if not np.array_equal(got, ours):
                    raise UnsupportedModel(
                        f"firmware arithmetic disagrees with TFLite Micro on {x.tolist()}: "
                        f"{ours.tolist()} != {got.tolist()}"
                    )
            reference = "tflite-micro"
    name = card.name[:16]
    blob = build_blob(name, card.version, model, spec, list(zip(inputs, expected, strict=True)))
    if len(blob) > SLOT_SIZE:
        raise UnsupportedModel(f"model image of {len(blob)} bytes exceeds a slot ({SLOT_SIZE})")
    crc = zlib.crc32(blob)
    up = symbol.upper()
    header = out_dir / f"{symbol}.h"
    source = out_dir / f"{symbol}.c"
    guard = f"{up}_H"
    vec_in = ", ".join("{" + ", ".join(str(int(v)) for v in x) + "}" for x in inputs)
    vec_out = ", ".join("{" + ", ".join(str(int(v)) for v in y) + "}" for y in expected)
    title = f"model {card.name!r} v{card.version}"
    header.write_text(f"""/* Generated by services/trainer/c_export.py for {title}.
 * {symbol}_tflite: the int8 .tflite for TensorFlow Lite Micro (16-byte aligned).
 * {symbol}_blob: the edgeloop firmware's model image (what `edgeloop device update-model`
 * streams). Test vectors are int8 model inputs and outputs, checked against {reference}. */
#ifndef {guard}
#define {guard}
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif

#define {up}_INPUT_SCALE {_c_float(model.input_scale)}
#define {up}_INPUT_ZERO_POINT ({model.input_zero_point})
#define {up}_OUTPUT_SCALE {_c_float(model.output_scale)}
#define {up}_OUTPUT_ZERO_POINT ({model.output_zero_point})
#define {up}_WINDOW {spec.window}
#define {up}_N_FIELDS {len(spec.field_ids)}
#define {up}_N_INPUTS {model.n_inputs}
#define {up}_N_OUTPUTS {model.n_outputs}
#define {up}_FLOAT_IO {1 if model.float_io else 0}
#define {up}_ARENA_BYTES {arena}
#define {up}_BLOB_CRC32 0x{crc:08x}u
#define {up}_N_TEST_VECTORS {len(inputs)}

extern const float {symbol}_input_mean[{up}_N_FIELDS];
extern const float {symbol}_input_std[{up}_N_FIELDS];
extern const float {symbol}_output_mean;
extern const float {symbol}_output_std;
extern const int8_t {symbol}_test_inputs[{up}_N_TEST_VECTORS][{up}_N_INPUTS];
extern const int8_t {symbol}_test_outputs[{up}_N_TEST_VECTORS][{up}_N_OUTPUTS];
extern const unsigned char {symbol}_tflite[];
extern const unsigned int {symbol}_tflite_len;
extern const unsigned char {symbol}_blob[];
extern const unsigned int {symbol}_blob_len;

#ifdef __cplusplus
}}
#endif
#endif
""")
    mean = ", ".join(_c_float(v) for v in spec.in_mean)
    std = ", ".join(_c_float(v) for v in spec.in_std)
    source.write_text(f"""/* Generated by services/trainer/c_export.py; see {symbol}.h. */
#include "{symbol}.h"

const float {symbol}_input_mean[{up}_N_FIELDS] = {{{mean}}};
const float {symbol}_input_std[{up}_N_FIELDS] = {{{std}}};
const float {symbol}_output_mean = {_c_float(spec.out_mean)};
const float {symbol}_output_std = {_c_float(spec.out_std)};
const int8_t {symbol}_test_inputs[{up}_N_TEST_VECTORS][{up}_N_INPUTS] = {{{vec_in}}};
const int8_t {symbol}_test_outputs[{up}_N_TEST_VECTORS][{up}_N_OUTPUTS] = {{{vec_out}}};

_Alignas(16) const unsigned char {symbol}_tflite[] = {{
{_c_array(int8_tflite)}
}};
const unsigned int {symbol}_tflite_len = {len(int8_tflite)}u;

_Alignas(16) const unsigned char {symbol}_blob[] = {{
{_c_array(blob)}
}};
const unsigned int {symbol}_blob_len = {len(blob)}u;
""")
    return CExport(header=header, source=source, blob=blob, arena_bytes=arena,
                   reference=reference, blob_crc32=crc)
